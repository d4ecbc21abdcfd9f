"""sweep_service.service.ops: the database check and the counts of the metrics."""

from __future__ import annotations

from typing import Any

from db.session import Database
from sweep_service.service import ops
from tests.api.api_builders import T


def test_counts_name_every_status_and_the_queue_leaves_out_imported_sweeps(db: Database, store: Any) -> None:
    empty = ops.counts(db)
    assert list(empty.trials) == ["pending", "running", "completed", "diverged", "failed", "cancelled"]
    assert set(empty.trials.values()) == {0} and set(empty.sweeps.values()) == {0} and empty.queued == 0
    store({"adamw/tiny-130k/1": [T({"lr": 1e-3}), T({"lr": 2e-3}, status="pending")]}, status="queued")
    store({"adamw/tiny-130k/1": [T({"lr": 1e-3})]}, status="queued", imported=True)  # never dispatched
    store({"adamw/tiny-130k/1": [T({"lr": 1e-3}, status="running")]}, status="running")
    got = ops.counts(db)
    assert got.trials["completed"] == 2 and got.trials["pending"] == 1 and got.trials["running"] == 1
    assert got.sweeps["queued"] == 2 and got.sweeps["running"] == 1 and got.sweeps["paused"] == 0
    assert got.queued == 1


def test_the_database_check_names_the_error_class_only(db: Database) -> None:
    assert ops.database_error(db) is None
    unreachable = Database("postgresql+psycopg2://nobody:secret@127.0.0.1:1/none")
    try:
        error = ops.database_error(unreachable)
    finally:
        unreachable.dispose()
    assert error == "OperationalError"
