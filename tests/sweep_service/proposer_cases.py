"""Sweeps of every strategy on the fake objective (fake_sweep.py), driven without Ray, and a compact record of what
each ran: the golden behaviour the proposers keep (test_proposers.py).

data/proposers_before.json was written by this module against the engine before the proposer registry
(commit fed8a3f, Optuna 5.1.0):  PYTHONPATH=<that checkout> python tests/sweep_service/proposer_cases.py OUT.json
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import optuna

from db import repository as repo
from db.migrate import upgrade
from db.session import Database
from sweep_service.engine import SweepDriver, study_name
from tests.sweep_service.fake_sweep import drive, new_sweep, spec

GOLDEN = Path(__file__).parent / "data" / "proposers_before.json"

# Budgets: TPE past its 10 random start-up trials, so that it differs from "random"; grid the whole 4 x 3 grid.
CASES: dict[str, dict[str, Any]] = {
    "coordinate_descent": {},
    "coordinate_descent_2seeds_confirm": {"seeds": [0, 1], "confirm_seeds": 1},
    "tpe": {"strategy": "tpe", "budget": 11},
    "random": {"strategy": "random", "budget": 7},
    "grid": {"strategy": "grid", "budget": 12},
}


def _number(x: float | None) -> float | str | None:
    return x if x is None or math.isfinite(x) else str(x)


def run_case(extra: dict[str, Any]) -> dict[str, Any]:
    """Drive one sweep of `spec(**extra)` to the end on a fresh SQLite file; what it ran, in trial-id order."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/case.db"
        upgrade(url)
        db = Database(url)
        try:
            sweep_id = new_sweep(db, spec(**extra))
            driver = SweepDriver(db, sweep_id)
            driver.prepare()
            drive(driver)
            with db.session() as s:
                (cell,) = repo.cells_of(s, sweep_id)
                trials = [
                    [t.config["lr"], t.config["wd"], t.seed, t.round, t.optuna_trial, t.status]
                    for t in repo.trials_of_sweep(s, sweep_id)
                ]
                best = cell.best_config or {}
                summary: dict[str, Any] = {
                    "trials": trials,
                    "cell": [cell.status, cell.round, best.get("lr"), best.get("wd"), cell.best_loss],
                    "near_ties": [[c["lr"], c["wd"]] for c in cell.near_ties or []],
                }
                key = cell.key
            study = optuna.load_study(study_name=study_name(sweep_id, key), storage=url)
            summary["study"] = [
                [t.params.get("lr"), t.params.get("wd"), t.state.name, _number(t.value)] for t in study.trials
            ]
        finally:
            db.dispose()
    return summary


if __name__ == "__main__":
    record = {"optuna": optuna.__version__, "cases": {name: run_case(extra) for name, extra in CASES.items()}}
    Path(sys.argv[1]).write_text(json.dumps(record, indent=None, sort_keys=True).replace('], "', '],\n "') + "\n")
