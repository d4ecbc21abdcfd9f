"""Apply the Alembic migrations (db/migrations) to a database URL: `sweep-service db upgrade` and start-up."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    with _migration_lock(url):
        command.upgrade(alembic_config(url), revision)


@contextlib.contextmanager
def _migration_lock(url: str) -> Iterator[None]:
    """One migrating process at a time per SQLite file: every command and the server upgrade on start, and two
    that both read version N before either wrote N+1 would both run N+1 (the second then fails: "expected to
    match one row"). An flock on `<file>.migrate-lock`, released by the kernel even if its holder is killed.
    PostgreSQL: Alembic's own transaction and version row are enough (no file)."""
    from db.session import sqlite_file

    path = sqlite_file(url)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".migrate-lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def current(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from db.session import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            opts = {"version_table": "sweep_alembic_version"}
            return MigrationContext.configure(connection, opts=opts).get_current_revision()
    finally:
        engine.dispose()
