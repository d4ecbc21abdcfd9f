"""Phases II and III (PAPER.md section 4): the pure decisions, and a sweep that runs all three phases."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest

from api import views
from db import repository as repo
from db.migrate import upgrade
from db.session import Database
from sweep_service.cli import decision_text
from sweep_service.engine import SweepDriver
from sweep_service.phases import phase_three, phase_two
from sweep_service.service import sweeps
from sweep_service.spec import Space, SpecError, plan_document
from tests.sweep_service.fake_sweep import WD, drive, new_sweep, spec
from workers.model import get_scale, non_embedding_params

# The best lr halves from one tiny scale to the next (a power law in N); the best wd is 0.1 everywhere.
BEST_LR = {"tiny-130k": 2.4e-2, "tiny-300k": 1.2e-2, "tiny-520k": 6e-3, "tiny-1.2m": 3e-3}
LADDER = [3e-3, 6e-3, 1.2e-2, 2.4e-2, 4.8e-2]


def loss_of(scale: str, config: dict[str, Any]) -> float:
    return 3.0 + math.log2(config["lr"] / BEST_LR[scale]) ** 2 * 0.05 + abs(config["wd"] - 0.1) * 0.3


def frame(cells: dict[str, list[tuple[float, float]]]) -> pd.DataFrame:
    """Trials of adamw at 1x: per scale, (lr, wd) configs with the loss above."""
    rows = []
    for scale, configs in cells.items():
        for lr, wd in configs:
            config = {"lr": lr, "wd": wd, "beta2": 0.98}
            rows.append(
                {
                    "optimizer": "adamw",
                    "scale": scale,
                    "chinchilla": 1.0,
                    "config": config,
                    "loss": loss_of(scale, config),
                    "status": "completed",
                    "non_embedding_params": non_embedding_params(get_scale(scale)),
                }
            )
    return pd.DataFrame(rows)


SPACE = Space({"lr": tuple(LADDER), "wd": tuple(WD)}, {"lr": 6e-3, "wd": 0.0}, {"beta2": 0.98})
NEIGHBOURS = [(lr, 0.1) for lr in LADDER] + [(1.2e-2, wd) for wd in WD]


def test_phase_two_retunes_only_what_moved_between_cells() -> None:
    trials = frame({"tiny-130k": NEIGHBOURS, "tiny-300k": NEIGHBOURS})
    best = {"lr": 1.2e-2, "wd": 0.1, "beta2": 0.98}
    decision = phase_two(SPACE, trials, "adamw", best, tolerance=3e-3)
    assert decision.record["unstable"] == ["lr"]  # best lr 2.4e-2 vs 1.2e-2: no common near-best value
    assert decision.record["stable"] == {"wd": [0.1]}
    assert decision.space.grid == {"lr": tuple(LADDER)}
    assert decision.space.baseline == {"lr": 1.2e-2}
    assert decision.space.fixed == {"beta2": 0.98, "wd": 0.1}


def test_phase_three_predicts_the_next_scale_on_the_grid() -> None:
    trials = frame({s: [(lr, wd) for lr in LADDER for wd in WD] for s in ["tiny-130k", "tiny-300k", "tiny-520k"]})
    n = non_embedding_params(get_scale("tiny-1.2m"))
    decision = phase_three(SPACE, trials, "adamw", n, 1.0, ablation=False, tolerance=3e-3)
    assert decision.record["method"] == "robust"  # the default
    assert decision.record["fits"]["wd"]["form"] == "constant"
    assert decision.space.baseline["wd"] == 0.1
    assert decision.space.grid["wd"] == (0.1,) and len(decision.space.grid) == 2  # only the prediction runs
    assert decision.space.baseline["lr"] in LADDER
    ablate = phase_three(SPACE, trials, "adamw", n, 1.0, ablation=True, tolerance=3e-3)
    assert ablate.max_rounds == 1 and ablate.space.grid == SPACE.grid


def test_phase_three_recovers_a_power_law_with_enough_cells() -> None:
    # Four scales: the lr law is determined; predict tiny-1.2m from the three below plus 2x data points.
    rows = []
    for scale in ["tiny-130k", "tiny-300k", "tiny-520k"]:
        for c in (1.0, 2.0):
            for lr in LADDER:
                config = {"lr": lr, "wd": 0.1, "beta2": 0.98}
                loss = 3.0 + math.log2(lr / BEST_LR[scale]) ** 2 * 0.05
                n = non_embedding_params(get_scale(scale))
                rows.append(
                    {
                        "optimizer": "adamw",
                        "scale": scale,
                        "chinchilla": c,
                        "config": config,
                        "loss": loss,
                        "status": "completed",
                        "non_embedding_params": n,
                    }
                )
    n = non_embedding_params(get_scale("tiny-1.2m"))
    decision = phase_three(SPACE, pd.DataFrame(rows), "adamw", n, 1.0, ablation=False, tolerance=3e-3)
    # Robust (default): the best-ranked form goes below half the smallest cell value (6e-3 / 2): flagged, and the
    # nearest cell's value is run instead.
    fit = decision.record["fits"]["lr"]
    assert fit["fallback"] and fit["raw"] < 3e-3 and decision.space.baseline["lr"] == 6e-3
    # method=paper (the cell's `method`): 6 of the paper's 12 cells fitted as the authors' script does, unguarded
    paper = phase_three(SPACE, pd.DataFrame(rows), "adamw", n, 1.0, ablation=False, tolerance=3e-3, method="paper")
    assert paper.record["method"] == "paper" and paper.record["fits"]["lr"]["form"] == "power_law"
    assert "6 of the paper's 12 cells" in paper.record["fits"]["lr"]["note"]
    # two Phase I cells leave nothing between the first and the held-out last: a clear error (the engine marks
    # the cell failed with it)
    two_cells = pd.DataFrame([r for r in rows if r["chinchilla"] == 1.0 and r["scale"] != "tiny-520k"])
    with pytest.raises(ValueError, match="method=paper needs the cells"):
        phase_three(SPACE, two_cells, "adamw", n, 1.0, ablation=False, tolerance=3e-3, method="paper")
    assert paper.space.baseline["lr"] == 3e-3  # the continuation of the halving, snapped to the grid


def test_a_phase_three_record_is_strict_json(monkeypatch: pytest.MonkeyPatch) -> None:
    # The record goes into the cell's settings (JSON): PostgreSQL's json type refuses NaN and Infinity, and a
    # robust fit's error can be +inf (scaling._loo_error when a form fails); its raw prediction can overflow.
    import dataclasses
    import json

    from sweep_service import scaling

    fit = scaling.fit_hparam_scaling

    def unbounded(*args: Any, **kwargs: Any) -> Any:
        return {k: dataclasses.replace(v, error=math.inf) for k, v in fit(*args, **kwargs).items()}

    monkeypatch.setattr(scaling, "fit_hparam_scaling", unbounded)
    rows = [
        {"optimizer": "adamw", "scale": scale, "chinchilla": 1.0, "config": {"lr": lr, "wd": 0.1}, "loss": 3.0,
         "status": "completed", "non_embedding_params": non_embedding_params(get_scale(scale))}
        for scale, lr in (("tiny-130k", 2.4e-2), ("tiny-300k", 1.2e-2))
    ]  # fmt: skip
    n = non_embedding_params(get_scale("tiny-520k"))
    decision = phase_three(SPACE, pd.DataFrame(rows), "adamw", n, 1.0, ablation=False, tolerance=3e-3)
    json.dumps(decision.record, allow_nan=False)  # raises on NaN or Infinity
    assert all(f["error"] is None for f in decision.record["fits"].values())


def test_a_sweep_runs_phase_one_then_two_then_three(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'phases.db'}"
    upgrade(url)
    db = Database(url)
    search = {"adamw": {"tune": ["lr", "wd"], "grid": {"lr": LADDER, "wd": WD}, "baseline": {"lr": 6e-3, "wd": 0.0}}}
    doc = spec(
        optimizers=[],
        scales=[],
        search=search,
        cells=[
            {"optimizer": "adamw", "scale": "tiny-130k", "chinchilla": 1},
            {"optimizer": "adamw", "scale": "tiny-300k", "chinchilla": 1},
            {"optimizer": "adamw", "scale": "tiny-300k", "chinchilla": 2, "phase": 2},
            {"optimizer": "adamw", "scale": "tiny-520k", "chinchilla": 1, "phase": 3, "ablation": True},
        ],
    )
    sweep_id = new_sweep(db, doc)
    driver = SweepDriver(db, sweep_id)
    driver.prepare()
    drive(driver, loss_of=lambda run: loss_of(run["scale"], run["hparams"]))
    with db.session() as s:
        cells = {c.key: c for c in repo.cells_of(s, sweep_id)}
        one, two = cells["adamw/tiny-300k/1"], cells["adamw/tiny-300k/2"]
        assert (cells["adamw/tiny-130k/1"].best_config or {}).get("lr") == 2.4e-2
        assert (one.best_config or {}).get("lr") == 1.2e-2
        # Phase II: lr moved between the Phase I cells, wd did not: only lr is searched, from 300k's best.
        assert two.settings["unstable"] == ["lr"] and list(two.space["grid"]) == ["lr"]
        assert two.space["fixed"]["wd"] == 0.1 and two.space["baseline"] == {"lr": 1.2e-2}
        assert {t.config["wd"] for t in repo.trials_of_cell(s, two.id)} == {0.1}
        # Phase III: ran the prediction and one round of one-at-a-time changes around it, nothing more.
        three = cells["adamw/tiny-520k/1"]
        prediction = three.settings["prediction"]
        assert three.status == "exhausted" and prediction["wd"] == 0.1
        assert three.settings["method"] == "robust"  # the spec's default reached phase_three (sweep_service/scaling.py)
        assert three.settings["fits"]["wd"]["form"] == "constant"
        three_trials = repo.trials_of_cell(s, three.id)
        assert all(t.round == 1 for t in three_trials)
        assert len(three_trials) == 1 + (len(LADDER) - 1) + (len(WD) - 1)
    # What was decided is shown, not only stored: the cells of `status ID` and GET /sweeps/{id}, and a line each.
    shown = {c.key: c for c in sweeps.cells(db, sweep_id)}
    assert shown["adamw/tiny-130k/1"].phase == 1 and shown["adamw/tiny-130k/1"].decision is None
    assert shown["adamw/tiny-300k/2"].phase == 2 and shown["adamw/tiny-300k/2"].decision == {
        "unstable": ["lr"], "stable": two.settings["stable"], "start": two.settings["start"]
    }  # fmt: skip
    decided = shown["adamw/tiny-520k/1"]
    assert decided.phase == 3 and decided.decision is not None
    assert decided.decision["prediction"] == prediction and decided.decision["method"] == "robust"
    assert views.cell_progress(decided).decision == decided.decision
    assert decision_text(2, shown["adamw/tiny-300k/2"].decision or {}).startswith("phase 2: re-tunes lr; stable: wd")
    line = decision_text(3, decided.decision)
    assert line.startswith("phase 3 (robust): runs ") and "wd=0.1" in line and "wd constant" in line, line


def test_phase_cells_are_validated() -> None:
    base = spec(cells=[{"optimizer": "adamw", "scale": "tiny-300k", "chinchilla": 2, "phase": 2, "tune": ["lr"]}])
    with pytest.raises(SpecError, match=r"cells\.0\.tune"):
        plan_document(base)
    unknown = spec(cells=[{"optimizer": "adamw", "scale": "tiny-300k", "chinchilla": 2, "phase": 3,
                           "from_cells": ["adamw/tiny-1.2m/1"]}])  # fmt: skip
    with pytest.raises(SpecError, match=r"cells\.0\.from_cells\.0"):
        plan_document(unknown)
    alone = spec(optimizers=[], scales=[], cells=[{"optimizer": "adamw", "scale": "tiny-300k", "chinchilla": 2,
                                                    "phase": 2}])  # fmt: skip
    with pytest.raises(SpecError, match="no phase 1 cell"):
        plan_document(alone)
    bad_method = spec(cells=[{"optimizer": "adamw", "scale": "tiny-300k", "chinchilla": 2, "phase": 3,
                              "method": "magic"}])  # fmt: skip
    with pytest.raises(SpecError, match=r"cells\.0\.method"):
        plan_document(bad_method)
    ok = plan_document(spec(cells=[{"optimizer": "adamw", "scale": "tiny-300k", "chinchilla": 2, "phase": 2}]))
    assert ok.cells[-1].from_cells == ("adamw/tiny-130k/1",)
