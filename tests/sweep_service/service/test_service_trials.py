"""sweep_service.service.trials: list_trials, get and curve on a real database (SQLite, then PostgreSQL)."""

from __future__ import annotations

import math
from datetime import UTC
from typing import Any

import pytest

from db.session import Database
from sweep_service.service import NotFound, trials
from tests.api.api_builders import T


@pytest.fixture
def stored(store: Any) -> Any:
    return store(
        {
            "adamw/tiny-130k/1": [
                T({"lr": 1e-3}, loss=3.1, seconds=30, curve=[(20, 3.2, 3.3), (10, 4.0, math.inf)]),
                T({"lr": 2e-3}, status="diverged", reason="loss above 1e4"),
                T({"lr": 4e-3}, status="pending"),
            ],
            "muon/tiny-130k/2": [T({"lr": 1e-2}, loss=2.9)],
        }
    )


def test_a_page_of_trials_is_oldest_first_filtered_and_counted(db: Database, stored: Any) -> None:
    page = trials.list_trials(db, stored.sweep_id)
    assert [t.id for t in page.items] == stored.trials and page.total == 4
    first = page.items[0]
    assert (first.cell, first.optimizer, first.chinchilla, first.final_loss) == ("adamw/tiny-130k/1", "adamw", 1, 3.1)
    assert first.started_at is not None and first.started_at.tzinfo is UTC
    for where, expected in (
        (trials.TrialFilter(status="diverged"), [stored.trials[1]]),
        (trials.TrialFilter(cell="muon/tiny-130k/2"), [stored.trials[3]]),
        (trials.TrialFilter(optimizer="adamw", status="pending"), [stored.trials[2]]),
        (trials.TrialFilter(chinchilla=2.0), [stored.trials[3]]),
        (trials.TrialFilter(scale="130m"), []),
    ):
        got = trials.list_trials(db, stored.sweep_id, where)
        assert [t.id for t in got.items] == expected and got.total == len(expected), where
    second = trials.list_trials(db, stored.sweep_id, limit=2, offset=2)
    assert [t.id for t in second.items] == stored.trials[2:] and second.total == 4


def test_trials_of_a_missing_sweep_are_not_found(db: Database) -> None:
    with pytest.raises(NotFound, match="no sweep 77"):
        trials.list_trials(db, 77)


def test_one_trial_with_its_record_and_its_curve_in_step_order(db: Database, stored: Any) -> None:
    done = trials.get(db, stored.trials[0])
    assert done.summary.status == "completed" and done.summary.config == {"lr": 1e-3}
    assert done.duration_seconds == pytest.approx(30) and done.attempts == 1 and done.repro is not None
    assert done.created_at.tzinfo is UTC
    diverged = trials.get(db, stored.trials[1])
    assert diverged.summary.final_loss is None and diverged.summary.reason == "loss above 1e4"
    curve = trials.curve(db, stored.trials[0])
    assert curve.status == "completed" and [p.step for p in curve.points] == [10, 20]
    assert curve.points[0] == trials.CurvePoint(10, 4.0, math.inf)  # as stored: the API sends null
    assert trials.curve(db, stored.trials[2]).points == []
    for use_case in (trials.get, trials.curve):
        with pytest.raises(NotFound, match="no trial 999"):
            use_case(db, 999)
