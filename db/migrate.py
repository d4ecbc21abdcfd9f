"""Apply the Alembic migrations (db/migrations) to a database URL: `sweep-service db upgrade` and start-up."""

from __future__ import annotations

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
    command.upgrade(alembic_config(url), revision)


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
