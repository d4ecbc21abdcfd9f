"""Ranking flips (the paper's third finding, PAPER.md section 1): rankings of optimizers flip mid-training
because of learning-rate decay, so only the end of training can judge them.

From the eval-loss curves of each cell's best trial, for every pair of optimizers at the same scale and data
multiple: where along training (as a fraction of the trial's own last evaluated step, since optimizers may run
different batch sizes and so different step counts for the same tokens) their ranking stops changing.

Pure function of the curves (`db.results.CellCurves` or anything with the same attributes); no database.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from typing import Any, Protocol

import numpy as np
import pandas as pd

__all__ = ["FLIP_COLUMNS", "best_curve", "pair_difference", "ranking_flips"]

FLIP_COLUMNS = [
    "scale",
    "chinchilla",
    "optimizer_a",
    "optimizer_b",
    "final_leader",
    "settled_at",
    "n_flips",
    "n_points",
    "final_gap",
    "note",
]


class CellCurvesLike(Protocol):
    """What is read of a cell (db.results.CellCurves has it); read-only, so frozen dataclasses fit."""

    @property
    def optimizer(self) -> str: ...
    @property
    def scale(self) -> str: ...
    @property
    def chinchilla(self) -> float: ...
    @property
    def best_trial_id(self) -> int | None: ...
    @property
    def curves(self) -> dict[int, list[tuple[int, float]]]: ...


def best_curve(cell: CellCurvesLike) -> tuple[np.ndarray, np.ndarray] | None:
    """(fraction of training, eval loss) of the cell's best trial, finite points only, shape (n,) each."""
    if cell.best_trial_id is None or cell.best_trial_id not in cell.curves:
        return None
    points = sorted((s, v) for s, v in cell.curves[cell.best_trial_id] if math.isfinite(v))
    if len(points) < 2 or points[-1][0] <= 0:
        return None
    steps = np.array([p[0] for p in points], np.float64)
    return steps / steps[-1], np.array([p[1] for p in points], np.float64)


def pair_difference(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """loss_a - loss_b on the union of both curves' fractions where both are defined (linear interpolation
    between evaluations; neither curve is extended beyond its own first evaluation)."""
    start = max(a[0][0], b[0][0])
    grid = np.unique(np.concatenate([a[0], b[0]]))
    grid = grid[grid >= start]
    return grid, np.interp(grid, a[0], a[1]) - np.interp(grid, b[0], b[1])


def _settle(grid: np.ndarray, diff: np.ndarray) -> tuple[float, int]:
    """(the fraction of training after which the sign of `diff` stays its final sign, number of sign changes).

    0 when the sign never was the opposite one; else the zero crossing after the last point of opposite sign,
    linearly interpolated between it and the next point (a tie, 0, neither flips nor breaks a run); NaN when
    the final difference is an exact tie."""
    signs = np.sign(diff)
    nonzero = signs[signs != 0]
    flips = int(np.sum(nonzero[1:] != nonzero[:-1])) if nonzero.size else 0
    final = signs[-1]
    if final == 0:
        return math.nan, flips
    opposite = np.flatnonzero(signs == -final)
    if opposite.size == 0:
        return 0.0, flips
    i = int(opposite[-1])
    d1, d2 = abs(float(diff[i])), abs(float(diff[i + 1]))
    return float(grid[i] + (grid[i + 1] - grid[i]) * d1 / (d1 + d2)), flips


def ranking_flips(curves: Sequence[CellCurvesLike]) -> pd.DataFrame:
    """Per (scale, chinchilla) and pair of optimizers with a best-trial curve: final_leader (lower final eval
    loss; "" on an exact tie), settled_at (fraction of training after which the ranking no longer changes: 0 if
    it never changed, NaN on a final tie), n_flips (sign changes of the loss difference along training),
    n_points (fractions compared), final_gap (loss_a - loss_b at the end). Pairs are ordered by name."""
    by_cell: dict[tuple[str, float], dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for cell in curves:
        curve = best_curve(cell)
        if curve is not None:
            by_cell.setdefault((cell.scale, float(cell.chinchilla)), {})[cell.optimizer] = curve
    rows: list[dict[str, Any]] = []
    for (scale, chinchilla), optimizers in sorted(by_cell.items()):
        for name_a, name_b in combinations(sorted(optimizers), 2):
            grid, diff = pair_difference(optimizers[name_a], optimizers[name_b])
            settled, flips = _settle(grid, diff)
            gap = float(diff[-1])
            note = ""
            if grid[0] > 0.5:
                note = f"curves overlap only from {grid[0]:.2f} of training"
            rows.append(
                {
                    "scale": scale,
                    "chinchilla": chinchilla,
                    "optimizer_a": name_a,
                    "optimizer_b": name_b,
                    "final_leader": name_a if gap < 0 else name_b if gap > 0 else "",
                    "settled_at": settled,
                    "n_flips": flips,
                    "n_points": int(grid.size),
                    "final_gap": gap,
                    "note": note,
                }
            )
    return pd.DataFrame(rows, columns=FLIP_COLUMNS)
