"""The rules db/models.py defines once (issue 15): what "finished" means, and a config's key."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np

from db import models, queries, repository
from db.session import Database
from sweep_service import analysis, engine, external


def test_finished_statuses_nest_and_cover_the_lifecycle() -> None:
    assert models.TRIAL_RANKED == ("completed", "diverged")
    assert models.TRIAL_ENDED == ("completed", "diverged", "failed")
    assert models.TRIAL_TERMINAL == ("completed", "diverged", "failed", "cancelled")
    assert set(models.TRIAL_TERMINAL) | {"pending", "running"} == set(models.TRIAL_STATUSES)


def test_every_user_takes_the_one_definition() -> None:
    assert engine.FINISHED_STATES is models.TRIAL_ENDED  # proposers learn from failed runs too (+inf)
    assert queries.ETA_STATUSES is models.TRIAL_ENDED
    assert external.TRIAL_OUTCOMES is models.TRIAL_ENDED
    assert frozenset(models.TRIAL_RANKED) == analysis.FINISHED_STATUSES


def _key_before_issue_15(config: dict[str, Any]) -> str:
    """db.repository.config_key as it was (commit fed8a3f), copied verbatim: the keys already stored."""

    def norm(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return v
        f = float(v)
        return int(f) if f.is_integer() and abs(f) < 2**53 else float(repr(f))

    return json.dumps({k: norm(v) for k, v in sorted(config.items())}, sort_keys=True)


VALUES: list[Any] = [0, 1, -3, 2**60, 1.0, 0.1, 1e-1, 0.1 + 0.2, 3e-3, 1e-8, 1e-25, 6e-3 * 1.0000001, 2.5e20,
                     float("inf"), float("-inf"), True, False, None, "cosine", "0.9", "", [0.9, 0.95]]  # fmt: skip


def test_config_key_is_byte_identical_to_the_stored_keys() -> None:
    rng = random.Random(0)
    configs: list[dict[str, Any]] = [{"v": v} for v in VALUES]
    configs += [
        {n: rng.choice(VALUES) for n in rng.sample(["lr", "wd", "beta1", "warmup", "b"], 3)} for _ in range(500)
    ]
    configs += [{"lr": rng.uniform(1e-5, 1e-1), "wd": rng.random(), "steps": rng.randrange(10**6)} for _ in range(500)]
    for config in configs:
        assert models.config_key(config) == _key_before_issue_15(config), config
    assert models.config_key({"wd": 0.1, "lr": 1.2e-2, "warmup": 1000.0}) == '{"lr": 0.012, "warmup": 1000, "wd": 0.1}'
    assert repository.config_key is models.config_key  # the name callers use


def test_config_key_stored_in_a_trial_row(db_url: str) -> None:
    db = Database(db_url)
    with db.session() as s:
        sweep = repository.create_sweep(s, "k", {})
        cell = repository.add_cell(s, sweep.id, key="adamw/tiny/1", optimizer="adamw", scale="tiny", chinchilla=1.0,
                                   strategy="grid", space={})  # fmt: skip
        searched = {"lr": 3e-3, "wd": 0.0}
        trial = repository.add_trial(s, cell, searched, {**searched, "beta1": 0.9}, 0, 0)
        assert trial is not None and trial.config_key == '{"lr": 0.003, "wd": 0}'
        assert repository.add_trial(s, cell, {"wd": 0, "lr": 0.003}, searched, 0, 0) is None  # the same run
    db.dispose()


def test_config_key_rule() -> None:
    assert models.config_key({"a": 1, "b": 0.1}) == models.config_key({"b": 0.1, "a": 1.0})
    assert models.config_key({"a": True}) != models.config_key({"a": 1})  # a boolean is not a number here
    assert models.config_key({"a": 0.1 + 0.2}) != models.config_key({"a": 0.3})  # exact: no tolerance (docstring)
    assert models.config_key({"a": np.float64(0.1), "b": np.int64(2), "c": np.bool_(True)}) == models.config_key(
        {"a": 0.1, "b": 2.0, "c": True}
    )
    assert models.value_key(1.0) == models.value_key(1) != models.value_key(True)


def test_sweep_terminal_statuses() -> None:
    assert models.SWEEP_TERMINAL == ("completed", "failed", "cancelled")
    assert set(models.SWEEP_STATUSES) - set(models.SWEEP_TERMINAL) == {"queued", "running", "paused"}
