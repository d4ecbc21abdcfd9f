"""Phases II and III (PAPER.md section 4): the search space of a cell that learns from other cells.

Pure functions of the other cells' finished trials (the analysis trials frame, sweep_service/analysis.py);
the engine calls them when a phase 2 or 3 cell's sources have all closed, and records what they decided in
the cell's settings, so the choice is visible in the API and a restarted driver does not re-decide it.

- Phase II: a hyperparameter is stable if one value lies in the near-best set of every source cell
  (`analysis.stable_hparams`); only the unstable ones are re-tuned, starting from a source cell's best; the
  stable ones stay at that best's values.
- Phase III: each hyperparameter is fitted as h(N, C) = A x N^B x C^C' + D over the source cells' best
  configs (`analysis.fit_hparam_scaling`) and predicted at the cell's own N and C, snapped to its grid. The
  cell runs the prediction; with an ablation, also every one-at-a-time change of it (one round).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sweep_service import analysis
from sweep_service.spec import Space


@dataclass(frozen=True)
class SourceCell:
    key: str
    non_embedding_params: int
    chinchilla: float
    best_config: dict[str, Any] | None


@dataclass(frozen=True)
class PhaseDecision:
    space: Space
    record: dict[str, Any]  # what was decided, kept in the cell's settings
    max_rounds: int | None = None  # Phase III ablation: one round around the prediction


def default_source(sources: Sequence[SourceCell], chinchilla: float) -> SourceCell:
    """The source whose best a Phase II cell starts from: the most parameters, then the nearest multiple."""
    with_best = [c for c in sources if c.best_config]
    if not with_best:
        raise ValueError("no source cell has a best config (every run diverged or failed)")
    return max(with_best, key=lambda c: (c.non_embedding_params, -abs(math.log(c.chinchilla / chinchilla))))


def phase_two(
    space: Space, trials: pd.DataFrame, optimizer: str, best: dict[str, Any], tolerance: float
) -> PhaseDecision:
    """Re-tune only the hyperparameters that are not stable over the source cells, from `best`."""
    table = analysis.stable_hparams(trials, tolerance=tolerance)
    table = table[table["optimizer"] == optimizer]
    stable = {str(r.hparam): list(r.common_values) for r in table.itertuples() if r.stable}
    unstable = [k for k in space.grid if k not in stable]
    grid = {k: space.grid[k] for k in unstable}
    baseline = {k: (best[k] if best.get(k) in v else space.baseline[k]) for k, v in grid.items()}
    fixed = {**space.fixed, **{k: v for k, v in best.items() if k not in grid}}
    record = {"unstable": unstable, "stable": {k: v for k, v in stable.items() if k in space.grid}, "start": best}
    return PhaseDecision(Space(grid, baseline, fixed), record)


def phase_three(
    space: Space,
    trials: pd.DataFrame,
    optimizer: str,
    non_embedding_params: int,
    chinchilla: float,
    ablation: bool,
    tolerance: float,
) -> PhaseDecision:
    """Predict the cell's config from the source cells' bests; run it (and its neighbourhood, with ablation)."""
    bests = analysis.best_per_cell(trials, tolerance=tolerance, n_boot=0)
    bests = bests[(bests["optimizer"] == optimizer) & bests["best_config"].map(lambda c: isinstance(c, dict))]
    if bests.empty:
        raise ValueError("no source cell has a best config (every run diverged or failed)")
    names = [k for k in space.grid if all(k in c for c in bests["best_config"])]
    fits = analysis.fit_hparam_scaling(bests, optimizer=optimizer, hparams=names, tolerance=tolerance)
    # Every fit is used, as the paper's Phase III does (PAPER.md section 4); one that missed its held-out cell by
    # more than the value itself (analysis.MAX_HOLDOUT_REL_ERROR, where GET /predict falls back to the majority
    # vote) is flagged in the cell's settings, and the ablation round around the prediction is the safeguard.
    limit = analysis.MAX_HOLDOUT_REL_ERROR
    predicted = analysis.predict_hparams(fits, non_embedding_params, chinchilla, grid=space.grid)
    baseline = {k: predicted.get(k, space.baseline[k]) for k in space.grid}
    record: dict[str, Any] = {
        "prediction": baseline,
        "fits": {
            name: {
                "method": fit.method,
                "n_points": fit.n_points,
                "underdetermined": fit.underdetermined,
                "holdout_rel_error": None if math.isnan(fit.holdout_rel_error) else fit.holdout_rel_error,
                "note": fit.note,
                "misses_holdout": fit.misses_holdout(limit),
            }
            for name, fit in fits.items()
        },
    }
    if ablation:
        return PhaseDecision(Space(dict(space.grid), baseline, dict(space.fixed)), record, max_rounds=1)
    return PhaseDecision(Space({k: (v,) for k, v in baseline.items()}, baseline, dict(space.fixed)), record)
