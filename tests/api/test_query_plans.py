"""The API's hot reads use the indexes of migration 0002 and read no table rows they do not return (SQLite's query
plans; bench/api_load.py measures the same reads with 100k trials on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from api_builders import T, store_sweep
from sqlalchemy import event
from sqlalchemy.orm import Session

from db import queries
from db.migrate import upgrade
from db.session import Database


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'plans.db'}"
    upgrade(url)
    db = Database(url)
    store_sweep(db, {"adamw/tiny-130k/1": [T({"lr": 1e-3}, loss=3.1), T({"lr": 2e-3}, status="running")]})
    store_sweep(db, {"adamw/tiny-130k/1": [T({"lr": 1e-3}, loss=3.0)]}, record_best=False)
    yield db
    db.dispose()


def plans(db: Database, read: Callable[[Session], Any]) -> dict[str, str]:
    """statement -> SQLite's query plan (the detail lines joined) of every SELECT that `read` runs."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, params))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        with db.session() as s:
            read(s)
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    out = {}
    with db.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        for statement, params in seen:
            rows = raw.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
            out[" ".join(statement.split())] = " | ".join(str(r[-1]) for r in rows)
    return out


def only(found: dict[str, str], starts: str) -> str:
    (plan,) = [p for s, p in found.items() if s.startswith(starts)]
    return plan


def test_a_sweeps_progress_is_read_from_one_index(sqlite_db: Database) -> None:
    found = plans(sqlite_db, lambda s: queries.sweep_trial_stats(s, 1))
    plan = only(found, "SELECT sweep_trials.cell_id, sweep_trials.status, count(*)")
    assert "COVERING INDEX ix_sweep_trials_progress" in plan and "TEMP B-TREE" not in plan, plan


def test_a_trials_page_walks_an_index_to_its_offset(sqlite_db: Database) -> None:
    unfiltered = plans(sqlite_db, lambda s: queries.list_trials(s, 1, queries.TrialFilter(), limit=1, offset=1))
    ids = only(unfiltered, "SELECT sweep_trials.id FROM sweep_trials WHERE")
    assert "COVERING INDEX ix_sweep_trials_sweep_id_id" in ids and "TEMP B-TREE" not in ids, ids
    count = only(unfiltered, "SELECT count(*)")
    assert "COVERING INDEX" in count and "cells" not in count, count  # no join without a cell filter
    page = only(unfiltered, "SELECT sweep_trials.id, sweep_trials.sweep_id, cells")
    assert "USING INTEGER PRIMARY KEY" in page, page  # the page's rows only, by id

    by_status = plans(
        sqlite_db, lambda s: queries.list_trials(s, 1, queries.TrialFilter(status="completed"), limit=1, offset=0)
    )
    ids = only(by_status, "SELECT sweep_trials.id FROM sweep_trials WHERE")
    assert "COVERING INDEX ix_sweep_trials_sweep_status" in ids and "TEMP B-TREE" not in ids, ids


def test_the_version_of_best_reads_no_trial_rows(sqlite_db: Database) -> None:
    found = plans(sqlite_db, queries.best_inputs_version)
    (plan,) = found.values()
    # The finished trials of the cell without a recorded best are counted from the index alone.
    assert "SCAN cells" in plan and "COVERING INDEX ix_sweep_trials_progress" in plan, plan
