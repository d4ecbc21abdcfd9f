"""Seed noise, measured and used (issue 12 item 4): `confirm_seeds` and `tolerance: auto`.

The paper ran one seed per config and called configs within 3e-3 of the best near-ties (PAPER.md section 4,
step 3). On the tiny CPU scales the seed-to-seed spread of one config is larger than that, so a winner picked
from one seed may be luck. Two spec fields measure the spread and use it:

- `confirm_seeds: K`: once a cell has converged, its best config and its near-ties run under K more seeds
  (`extra_seeds`); the cell is marked converged when they have finished, and its best is then the lowest seed
  mean among the confirmed configs, its near-ties those whose mean is within the tolerance of it.
- `tolerance: auto` (needs K >= 1): the baseline config of the reference cell (`reference_cell`: the first
  Phase I AdamW cell that searches something, else the first Phase I cell) runs under K more seeds alongside
  its first round; every cell's near-tie tolerance becomes max(3e-3, 2 x the std of those seeds) (`auto_tolerance`).
  Cells run their first round meanwhile (the baseline's neighbourhood does not depend on the tolerance) and
  make no decision until it is known.

Keys this writes into a cell's `settings` JSON (read by the analysis, the CLI and the API):

| key | type | meaning |
| --- | --- | --- |
| tolerance | float | the near-tie tolerance the cell uses (3e-3, or the floor while `auto` is pending) |
| tolerance_auto | str or absent | "pending" until the baseline's seed noise is measured, then "measured" |
| tolerance_noise | dict or absent | the measurement: {"cell", "config", "seeds", "losses", "std"} |
| confirming | list[dict] or absent | searched configs whose confirmation seeds are running |
| seed_stats | list[dict] | per confirmed config: {"config" (searched), "seeds", "losses", "mean", "std"} |
|  |  | (std: sample std, ddof 1; None below two finite seeds), best first |
| best_std | float or None | the std over seeds of the cell's best config |
| noise_std | float or None | the pooled std of all confirmed configs: sqrt(sum (n-1) var / sum (n-1)) |

A diverged or failed seed counts as +inf: its config's mean is +inf and it cannot be best.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sweep_service.coordinate_descent import TOLERANCE, near_tie
from sweep_service.spec import CellPlan, SweepPlan

# tolerance: auto is max(TOLERANCE, NOISE_MULTIPLE x std) (issue 12 item 4): two standard deviations of one
# seed's loss, so that two configs whose true losses are equal are near-ties ~95% of the time for Gaussian noise.
NOISE_MULTIPLE = 2.0
PENDING = "pending"
MEASURED = "measured"


def extra_seeds(seeds: Sequence[int], k: int) -> tuple[int, ...]:
    """K seeds after the sweep's own: max(seeds) + 1, ..., max(seeds) + K."""
    top = max(seeds)
    return tuple(top + i for i in range(1, k + 1))


def all_seeds(plan: SweepPlan) -> tuple[int, ...]:
    return tuple(plan.seeds) + extra_seeds(plan.seeds, plan.confirm_seeds)


def reference_cell(plan: SweepPlan) -> CellPlan | None:
    """The cell whose baseline measures the seed noise for `tolerance: auto`."""
    first = [c for c in plan.cells if c.phase == 1 and c.baseline_from is None]
    searched = [c for c in first if c.space.grid]
    for group in ([c for c in searched if c.optimizer == "adamw"], searched, first):
        if group:
            return group[0]
    return None


def initial_settings(plan: SweepPlan) -> dict[str, Any]:
    """The noise keys of a new cell's settings."""
    if plan.tolerance_auto:
        return {"tolerance": plan.tolerance, "tolerance_auto": PENDING}
    return {"tolerance": plan.tolerance}


def cell_tolerance(settings: dict[str, Any], default: float) -> float | None:
    """The cell's near-tie tolerance; None while `tolerance: auto` is still measuring."""
    if settings.get("tolerance_auto") == PENDING:
        return None
    value = settings.get("tolerance")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def _finite_losses(losses: Sequence[float]) -> list[float]:
    return [x for x in losses if math.isfinite(x)]


def sample_std(losses: Sequence[float]) -> float | None:
    """Sample std (ddof 1) of the losses; None below two finite values or when any seed diverged."""
    finite = _finite_losses(losses)
    if len(finite) < 2 or len(finite) != len(losses):
        return None
    return statistics.stdev(finite)


def auto_tolerance(losses: Sequence[float]) -> float:
    """max(3e-3, 2 x std) of the baseline's seeds (the floor when the std is unknown: a diverged seed)."""
    std = sample_std(losses)
    return TOLERANCE if std is None else max(TOLERANCE, NOISE_MULTIPLE * std)


@dataclass(frozen=True)
class SeedStat:
    config: dict[str, Any]  # the searched hyperparameters
    seeds: list[int]
    losses: list[float]  # +inf for a diverged or failed seed

    @property
    def mean(self) -> float:
        return statistics.fmean(self.losses) if all(map(math.isfinite, self.losses)) else math.inf

    @property
    def std(self) -> float | None:
        return sample_std(self.losses)

    def to_dict(self) -> dict[str, Any]:
        mean = self.mean
        return {
            "config": self.config,
            "seeds": self.seeds,
            "losses": [x if math.isfinite(x) else None for x in self.losses],
            "mean": mean if math.isfinite(mean) else None,
            "std": self.std,
        }


def pooled_std(stats: Sequence[SeedStat]) -> float | None:
    """sqrt(sum (n_i - 1) var_i / sum (n_i - 1)) over configs with two or more finite seeds."""
    num = den = 0.0
    for st in stats:
        std = st.std
        if std is not None:
            num += (len(st.losses) - 1) * std**2
            den += len(st.losses) - 1
    return math.sqrt(num / den) if den > 0 else None


@dataclass(frozen=True)
class Confirmed:
    """The outcome of a cell's confirmation: its best, near-ties and the settings keys to store."""

    best: dict[str, Any] | None
    best_loss: float
    near_ties: list[dict[str, Any]]
    settings: dict[str, Any]


def confirm(stats: Sequence[SeedStat], tolerance: float) -> Confirmed:
    """Best = lowest seed mean (ties: the first given, i.e. the descent's own best); near-ties within tolerance."""
    ranked = sorted(stats, key=lambda st: st.mean)  # stable: equal means keep the given order
    best = ranked[0] if ranked and math.isfinite(ranked[0].mean) else None
    near = [st.config for st in ranked if best is not None and near_tie(st.mean, best.mean, tolerance)]
    return Confirmed(
        best=best.config if best is not None else None,
        best_loss=best.mean if best is not None else math.inf,
        near_ties=near,
        settings={
            "seed_stats": [st.to_dict() for st in ranked],
            "best_std": best.std if best is not None else None,
            "noise_std": pooled_std(ranked),
        },
    )


def summary(settings: dict[str, Any] | None) -> dict[str, Any]:
    """What `sweep-service status ID` and `GET /sweeps/{id}` show per cell: the best config's seed count, mean and
    std, the pooled noise_std, and the near-tie tolerance with how it was set. None where not measured."""
    settings = settings or {}
    stats = settings.get("seed_stats") or []
    best = stats[0] if stats and isinstance(stats[0], dict) else {}
    tolerance = settings.get("tolerance")
    return {
        "seeds": len(best.get("seeds") or []) or None,
        "best_mean": best.get("mean"),
        "best_std": settings.get("best_std"),
        "noise_std": settings.get("noise_std"),
        "tolerance": float(tolerance)
        if isinstance(tolerance, int | float) and not isinstance(tolerance, bool)
        else None,
        "tolerance_auto": settings.get("tolerance_auto"),
    }
