"""The rules db/models.py defines once (issue 15): what "finished" means, and a config's key."""

from __future__ import annotations

from db import models, queries
from sweep_service import analysis, engine, external


def test_finished_statuses_nest_and_cover_the_lifecycle() -> None:
    assert models.TRIAL_RANKED == ("completed", "diverged")
    assert models.TRIAL_ENDED == ("completed", "diverged", "failed")
    assert models.TRIAL_TERMINAL == ("completed", "diverged", "failed", "cancelled")
    assert set(models.TRIAL_TERMINAL) | {"pending", "running"} == set(models.TRIAL_STATUSES)
    assert models.TRIAL_FINISHED == models.TRIAL_RANKED  # the older name


def test_every_user_takes_the_one_definition() -> None:
    assert engine.FINISHED_STATES is models.TRIAL_ENDED  # proposers learn from failed runs too (+inf)
    assert queries.ETA_STATUSES is models.TRIAL_ENDED
    assert external.TRIAL_OUTCOMES is models.TRIAL_ENDED
    assert frozenset(models.TRIAL_RANKED) == analysis.FINISHED_STATUSES
