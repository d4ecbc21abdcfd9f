"""Phases II and III (PAPER.md section 4): the search space of a cell that learns from other cells.

Pure functions of the other cells' finished trials (the analysis trials frame, sweep_service/analysis.py);
the engine calls them when a phase 2 or 3 cell's sources have all closed, and records what they decided in
the cell's settings, so the choice is visible in the API and a restarted driver does not re-decide it.

- Phase II: a hyperparameter is stable if one value lies in the near-best set of every source cell
  (`analysis.stable_hparams`); only the unstable ones are re-tuned, starting from a source cell's best; the
  stable ones stay at that best's values.
- Phase III: each hyperparameter is fitted over the source cells' best configs with the cell's `method`
  (`scaling.fit_hparam_scaling`: "robust" by default, or "paper", the authors' procedure) and predicted at the
  cell's own N and C, snapped to its grid. The
  cell runs the prediction; with an ablation, also every one-at-a-time change of it (one round).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sweep_service import analysis, scaling
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


def _finite_or_none(value: Any) -> Any:
    """`value`, or None for a float that is not finite (settings are stored as JSON)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def phase_three(
    space: Space,
    trials: pd.DataFrame,
    optimizer: str,
    non_embedding_params: int,
    chinchilla: float,
    ablation: bool,
    tolerance: float,
    method: str = "robust",
) -> PhaseDecision:
    """Predict the cell's config from the source cells' bests with `method` ("robust" or "paper",
    sweep_service/scaling.py), snapped to the cell's grid; run it (and its neighbourhood, with ablation)."""
    bests = analysis.best_per_cell(trials, tolerance=tolerance, n_boot=0)
    bests = bests[(bests["optimizer"] == optimizer) & bests["best_config"].map(lambda c: isinstance(c, dict))]
    if bests.empty:
        raise ValueError("no source cell has a best config (every run diverged or failed)")
    names = [k for k in space.grid if all(k in c for c in bests["best_config"])]
    fits = scaling.fit_hparam_scaling(bests, optimizer=optimizer, hparams=names, method=method)  # type: ignore[arg-type]
    predictions = {
        name: scaling.predict_hparam(fit, non_embedding_params, chinchilla, space.grid.get(name))
        for name, fit in fits.items()
    }
    # A value that is not finite at this size (None) leaves the grid's baseline in its place.
    baseline: dict[str, Any] = {k: space.baseline[k] for k in space.grid}
    baseline.update({k: p.value for k, p in predictions.items() if p.value is not None})
    record: dict[str, Any] = {
        "prediction": baseline,
        "method": method,
        "fits": {
            name: {
                "form": fit.form,
                "n_points": fit.n_points,
                # JSON-safe: PostgreSQL's json type refuses NaN and Infinity (a fit's error can be +inf)
                "error": _finite_or_none(fit.error),
                "raw": _finite_or_none(predictions[name].raw),
                "fallback": predictions[name].fallback,
                "note": predictions[name].note,
            }
            for name, fit in fits.items()
        },
    }
    if ablation:
        return PhaseDecision(Space(dict(space.grid), baseline, dict(space.fixed)), record, max_rounds=1)
    return PhaseDecision(Space({k: (v,) for k, v in baseline.items()}, baseline, dict(space.fixed)), record)
