"""The schema: the models (db/models.py) match the migrations, and `sweep-service db upgrade` takes a database
at revision 0001, with data in it, to the latest revision (0002 adds the API's read indexes, 0003 the lease
epoch), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from api_builders import T, store_sweep
from sqlalchemy import create_engine, inspect, text

from db.migrate import alembic_config, current
from db.models import Base
from db.session import Database
from sweep_service.cli import main
from sweep_service.settings import get_settings

VERSION_TABLE = "sweep_alembic_version"  # db/migrations/env.py
READ_INDEXES = {"ix_sweep_trials_sweep_id_id", "ix_sweep_trials_progress"}  # migration 0002


def _ours(name: str | None, type_: str, _parent: Any) -> bool:
    """Only our tables: Optuna keeps its own in the same database (db/models.py)."""
    return type_ != "table" or name in Base.metadata.tables


def _indexes(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {str(ix["name"]) for ix in inspect(engine).get_indexes("sweep_trials")}
    finally:
        engine.dispose()


@pytest.fixture
def cli_database(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`db_url` as the CLI's DATABASE_URL (settings are read once per process: the cache is cleared around)."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield db_url
    get_settings.cache_clear()


def test_the_models_match_the_migrations(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            opts = {"version_table": VERSION_TABLE, "include_name": _ours}
            diffs = compare_metadata(MigrationContext.configure(conn, opts=opts), Base.metadata)
    finally:
        engine.dispose()
    assert diffs == []
    head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    assert current(db_url) == head


def test_db_upgrade_takes_a_0001_database_with_data_to_the_latest_schema(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = cli_database
    # The rows are written at the latest schema (the ORM's), then the database is taken down to 0001 with them:
    # the models always describe the latest schema, so they cannot write a 0001 database once a column is added.
    db = Database(url)
    stored = store_sweep(db, {"adamw/tiny-130k/1": [T({"lr": 1e-3}, loss=3.1), T({"lr": 2e-3}, status="pending")]})
    db.dispose()
    command.downgrade(alembic_config(url), "0001")
    assert current(url) == "0001" and not READ_INDEXES & _indexes(url)

    assert main(["db", "upgrade"]) == 0
    assert "latest schema" in capsys.readouterr().out
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert current(url) == head != "0001"
    assert _indexes(url) >= READ_INDEXES
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, status FROM sweep_trials ORDER BY id")).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [(stored.trials[0], "completed"), (stored.trials[1], "pending")]
    assert main(["db", "upgrade"]) == 0  # at the latest schema already: nothing to do, no error
