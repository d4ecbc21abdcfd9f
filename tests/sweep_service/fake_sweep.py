"""A synthetic sweep for engine and dispatcher tests: results come from a function of the config."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from db import repository as repo
from db.session import Database
from sweep_service.engine import SweepDriver

LR = [3e-3, 6e-3, 1.2e-2, 2.4e-2]
WD = [0.0, 0.1, 0.2]


def spec(**extra: Any) -> dict[str, Any]:
    return {
        "name": "fake",
        "optimizers": ["adamw"],
        "scales": ["tiny-130k"],
        "chinchilla": [1],
        "search": {
            "adamw": {
                "tune": ["lr", "wd"],
                "grid": {"lr": LR, "wd": WD},
                "baseline": {"lr": 3e-3, "wd": 0.0},
            }
        },
        "max_concurrent": 3,
        **extra,
    }


def objective(config: dict[str, Any]) -> float:
    """A bowl with its minimum at lr 1.2e-2, wd 0.1; lr 2.4e-2 diverges."""
    if config["lr"] == 2.4e-2:
        return math.inf
    return 3.0 + (math.log2(config["lr"] / 1.2e-2)) ** 2 * 0.05 + abs(config["wd"] - 0.1) * 0.3


def final(config: dict[str, Any]) -> dict[str, Any]:
    return final_result(objective(config))


def final_result(loss: float, steps: int = 10) -> dict[str, Any]:
    """The trainable's last report for a run that ended at `loss` (+inf: diverged)."""
    status = "completed" if math.isfinite(loss) else "diverged"
    return {"kind": "final", "status": status, "final_eval_loss": loss, "initial_eval_loss": 5.5, "steps": steps}


def new_sweep(db: Database, doc: dict[str, Any]) -> int:
    with db.session() as s:
        return repo.create_sweep(s, doc["name"], doc).id


def drive(
    driver: SweepDriver,
    limit: int = 1000,
    stop_after: int | None = None,
    loss_of: Callable[[dict[str, Any]], float] | None = None,
    curve: Sequence[int] = (5,),
) -> list[int]:
    """Hand out trials like Tune would (up to 3 in flight), finishing them in order; returns finished ids.

    `loss_of` maps a trial's run (scale, optimizer, chinchilla, hparams, ...) to its final loss (default:
    `objective` of the hyperparameters); each trial reports eval losses at the `curve` steps, falling from 5.5
    to the final loss (rising, for a diverged run).
    """
    finished: list[int] = []
    in_flight: list[dict[str, Any]] = []
    for _ in range(limit):
        while len(in_flight) < 3:
            nxt = driver.next_trial()
            if not isinstance(nxt, dict):
                break
            in_flight.append(nxt)
        if not in_flight:
            assert driver.next_trial() == "FINISHED"
            return finished
        trial = in_flight.pop(0)
        loss = loss_of(trial["run"]) if loss_of is not None else objective(trial["run"]["hparams"])
        last = max(curve, default=10)
        for step in curve:
            value = loss + (5.5 - loss) * math.exp(-step / (last / 4)) if math.isfinite(loss) else 5.5 + step
            driver.record_eval(trial["trial_id"], step, value, None)
        driver.record_final(trial["trial_id"], final_result(loss, max(10, last)))
        finished.append(trial["trial_id"])
        if stop_after is not None and len(finished) >= stop_after:
            return finished
    raise AssertionError("did not finish")
