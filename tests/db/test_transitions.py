"""Cell transitions (db/transitions.py): compare-and-set, so of two writers expecting the same status one wins."""

from __future__ import annotations

from typing import Any

from db import repository as repo
from db import transitions
from db.session import Database


def _cell(db: Database, status: str = "pending") -> tuple[int, int]:
    """A sweep with one cell in `status`; (cell id, its trial's id)."""
    with db.session() as s:
        sweep = repo.create_sweep(s, "t", {"name": "t"})
        cell = repo.add_cell(
            s,
            sweep.id,
            key="adamw/tiny-130k/1",
            optimizer="adamw",
            scale="tiny-130k",
            chinchilla=1.0,
            strategy="tpe",
            space={"grid": {"lr": [0.1]}, "baseline": {"lr": 0.1}, "fixed": {}},
            settings={},
            status=status,
        )
        trial = repo.add_trial(s, cell, {"lr": 0.1}, {"lr": 0.1}, 0, 1)
        assert trial is not None
        return cell.id, trial.id


def _status(db: Database, cell_id: int) -> tuple[str, dict[str, Any]]:
    with db.session() as s:
        (cell,) = [c for c in repo.find_cells(s) if c.id == cell_id]
        return cell.status, dict(cell.settings)


def test_a_transition_from_the_expected_status_wins_and_writes_its_fields(db_url: str) -> None:
    db = Database(db_url)
    cell_id, _ = _cell(db)
    with db.session() as s:
        assert transitions.set_cell_status(s, cell_id, "pending", "running", settings={"phase": 1})
    assert _status(db, cell_id) == ("running", {"phase": 1})
    db.dispose()


def test_a_transition_loses_when_the_status_is_not_the_expected_one(db_url: str) -> None:
    db = Database(db_url)
    cell_id, _ = _cell(db, status="converged")
    with db.session() as s:
        assert not transitions.set_cell_status(s, cell_id, ("pending", "running"), "exhausted", settings={"x": 1})
    assert _status(db, cell_id) == ("converged", {})  # nothing written, fields included
    db.dispose()


def test_of_two_writers_expecting_pending_only_the_first_wins(db_url: str) -> None:
    db = Database(db_url)
    cell_id, _ = _cell(db)
    with db.session() as first:
        assert transitions.set_cell_status(first, cell_id, "pending", "running")
    with db.session() as second:  # it read "pending" before the first committed; its expectation is stale
        assert not transitions.set_cell_status(second, cell_id, "pending", "failed", settings={"error": "late"})
    assert _status(db, cell_id) == ("running", {})
    db.dispose()


def test_a_record_read_before_a_transition_stays_as_read_and_a_new_read_shows_it(db_url: str) -> None:
    db = Database(db_url)
    cell_id, trial_id = _cell(db)
    with db.session() as s:
        (cell,) = [c for c in repo.find_cells(s) if c.id == cell_id]
        assert transitions.set_cell_status(s, cell_id, "pending", "running")
        assert cell.status == "pending"  # a record is a snapshot
        # Read again in the same session, whose identity map still holds the row as it was before the UPDATE
        # (synchronize_session=False): every read is fresh (populate_existing), so all of them show the change.
        again = repo.get_cell(s, cell_id)
        assert again is not None and again.status == "running"
        assert [c.status for c in repo.cells_of(s, cell.sweep_id)] == ["running"]
        assert [c.status for c in repo.find_cells(s) if c.id == cell_id] == ["running"]
        transitions.set_optuna_trial(s, trial_id, 4)
        trial = repo.get_trial(s, trial_id)
        assert trial is not None and trial.optuna_trial == 4
    with db.session() as s:
        trial = repo.get_trial(s, trial_id)
        assert trial is not None and trial.optuna_trial == 4
    db.dispose()


def test_end_transaction_makes_the_writes_so_far_visible_to_other_connections(db_url: str) -> None:
    db = Database(db_url)
    cell_id, _ = _cell(db)
    with db.session() as s:
        assert transitions.set_cell_status(s, cell_id, "pending", "running")
        transitions.end_transaction(s)
        assert _status(db, cell_id)[0] == "running"  # another session (connection) sees it before our exit
        assert transitions.set_cell_status(s, cell_id, "running", "converged")  # the session goes on
    assert _status(db, cell_id)[0] == "converged"
    db.dispose()
