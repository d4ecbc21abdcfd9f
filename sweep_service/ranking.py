"""Ranking: which config is best in a cell, and which optimizer leads along training.

Configs within a cell (PAPER.md section 4, Phases I and II), on the trials frame (sweep_service.analysis
documents its columns): `best_per_cell` (best config, near-ties, counts, compute used), `sensitivity` (one-at-a-
time changes from the best), `stable_hparams` (the Phase II rule). Ranking rules: only TRIAL_RANKED trials
(completed, diverged) are results; a diverged trial, and a completed one whose loss is NaN, infinite or above
1e4, ranks as +inf (coordinate_descent.ranking_loss), never dropped; a config (db.models.config_key) run under
several seeds ranks by the mean of its seeds' losses; near-ties are coordinate_descent.near_tie.

Ranking flips (the paper's third finding, PAPER.md section 1): rankings of optimizers flip mid-training
because of learning-rate decay, so only the end of training can judge them.

From the eval-loss curves of each cell's best trial, for every pair of optimizers at the same scale and data
multiple: where along training (as a fraction of the trial's own last evaluated step, since optimizers may run
different batch sizes and so different step counts for the same tokens) their ranking stops changing.

Pure functions of the trials frame and of the curves (`db.results.CellCurves` or anything with the same
attributes); no database.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Protocol

import numpy as np
import pandas as pd

from db import models
from db.models import TRIAL_RANKED
from sweep_service.bootstrap import CI_LEVEL, N_BOOT, percentile_interval, resample_means
from sweep_service.coordinate_descent import DIVERGENCE_THRESHOLD, TOLERANCE, near_tie, ranking_loss

__all__ = [
    "CELL_KEY",
    "FLIP_COLUMNS",
    "NEAR_TIE_TOLERANCE",
    "TRIAL_COLUMNS",
    "CellSummary",
    "ConfigResult",
    "best_curve",
    "best_per_cell",
    "check_trials",
    "config_key",
    "is_number",
    "pair_difference",
    "ranking_flips",
    "sensitivity",
    "stable_hparams",
    "summarize",
]

Cell = tuple[str, str, float]

CELL_KEY: tuple[str, str, str] = ("optimizer", "scale", "chinchilla")
REQUIRED_COLUMNS: tuple[str, ...] = ("optimizer", "scale", "chinchilla", "config", "loss", "status")
OPTIONAL_COLUMNS: tuple[str, ...] = ("seed", "trial_id", "non_embedding_params", "tokens", "device_seconds")
TRIAL_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

# Statuses whose loss is a result (DESIGN.md "trial": diverged is a result, never dropped): db.models defines them.
FINISHED_STATUSES = frozenset(TRIAL_RANKED)
# A finished run with loss above this ranks as diverged (PAPER.md section 4, Phase I step 2).
DIVERGED_LOSS_ABOVE = DIVERGENCE_THRESHOLD
# Near-tie tolerance on the final loss (PAPER.md section 4, Phase I step 3); the rule is coordinate_descent.near_tie.
NEAR_TIE_TOLERANCE = TOLERANCE

# A config's identity: db.models.config_key, the one rule (exact floats, 1 == 1.0, True != 1); value_key per value.
config_key = models.config_key
_value_key = models.value_key


# ---------------------------------------------------------------------------------------------------------------
# Trials: validation, per-cell summaries
# ---------------------------------------------------------------------------------------------------------------


def check_trials(trials: pd.DataFrame) -> None:
    """Raise a ValueError naming the missing columns if `trials` lacks a required column."""
    missing = [c for c in REQUIRED_COLUMNS if c not in trials.columns]
    if missing:
        raise ValueError(f"trials frame lacks column(s) {missing}; required: {list(REQUIRED_COLUMNS)}")


def is_number(value: object) -> bool:
    """A number, NumPy's included, and not a boolean (True is not 1 in a config)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _ranking_loss(loss: object, status: str) -> float:
    """The loss a finished trial ranks by: +inf when diverged, else coordinate_descent.ranking_loss (NaN, +-inf and
    losses above DIVERGED_LOSS_ABOVE rank as +inf; PAPER.md section 4, Phase I step 2)."""
    if status == "diverged":
        return math.inf
    return ranking_loss(float(loss) if is_number(loss) else None, DIVERGED_LOSS_ABOVE)  # type: ignore[arg-type]


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as plain dicts keyed by column name."""
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def _float_or_nan(value: object) -> float:
    if is_number(value):
        return float(value)  # type: ignore[arg-type]
    return math.nan


@dataclass(frozen=True)
class ConfigResult:
    """One config of a cell (its seeds grouped by config_key) and its ranking losses."""

    config: dict[str, Any]
    losses: tuple[float, ...]  # ranking loss of each finished trial (one per seed)

    @property
    def loss(self) -> float:
        return float(np.mean(self.losses))


@dataclass(frozen=True)
class CellSummary:
    """One cell of the trials frame, ranked: what best_per_cell, sensitivity, stable_hparams and speedups read."""

    key: Cell
    configs: tuple[ConfigResult, ...]  # finished configs, best first
    n_trials: int
    n_finished: int
    n_diverged: int
    device_seconds: float
    tokens: float
    non_embedding_params: float

    @property
    def best(self) -> ConfigResult | None:
        """The best config, or None when no config reached a finite loss."""
        if self.configs and math.isfinite(self.configs[0].loss):
            return self.configs[0]
        return None

    def near_ties(self, tolerance: float) -> list[ConfigResult]:
        best = self.best
        if best is None:
            return []
        return [c for c in self.configs if near_tie(c.loss, best.loss, tolerance)]


def _nan_sum(values: Iterable[float]) -> float:
    """Sum of the known values; NaN when none is known."""
    known = [v for v in values if math.isfinite(v)]
    return math.fsum(known) if known else math.nan


def summarize(trials: pd.DataFrame) -> list[CellSummary]:
    """One summary per cell, ordered by optimizer, then N, then scale name, then multiple."""
    check_trials(trials)
    groups: dict[Cell, list[dict[str, Any]]] = {}
    for record in _records(trials):
        key: Cell = (str(record["optimizer"]), str(record["scale"]), float(record["chinchilla"]))
        groups.setdefault(key, []).append(record)
    summaries: list[CellSummary] = []
    for key, records in groups.items():
        by_config: dict[str, tuple[dict[str, Any], list[float]]] = {}
        n_finished = 0
        n_diverged = 0
        for record in records:
            status = str(record["status"])
            if status not in FINISHED_STATUSES:
                continue
            n_finished += 1
            loss = _ranking_loss(record["loss"], status)
            n_diverged += int(math.isinf(loss))
            config = dict(record["config"])
            entry = by_config.setdefault(config_key(config), (config, []))
            entry[1].append(loss)
        configs = sorted(
            (ConfigResult(config=cfg, losses=tuple(losses)) for cfg, losses in by_config.values()),
            key=lambda c: c.loss,
        )
        params = [_float_or_nan(r.get("non_embedding_params")) for r in records]
        summaries.append(
            CellSummary(
                key=key,
                configs=tuple(configs),
                n_trials=len(records),
                n_finished=n_finished,
                n_diverged=n_diverged,
                device_seconds=_nan_sum(_float_or_nan(r.get("device_seconds")) for r in records),
                tokens=_nan_sum(_float_or_nan(r.get("tokens")) for r in records),
                non_embedding_params=next((p for p in params if math.isfinite(p)), math.nan),
            )
        )
    summaries.sort(key=_summary_order)
    return summaries


def _summary_order(s: CellSummary) -> tuple[str, float, str, float]:
    n = s.non_embedding_params if math.isfinite(s.non_embedding_params) else math.inf
    return (s.key[0], n, s.key[1], s.key[2])


# ---------------------------------------------------------------------------------------------------------------
# best_per_cell, sensitivity, stable_hparams (PAPER.md section 4, Phases I and II)
# ---------------------------------------------------------------------------------------------------------------


def best_per_cell(
    trials: pd.DataFrame,
    tolerance: float = NEAR_TIE_TOLERANCE,
    n_boot: int = N_BOOT,
    ci: float = CI_LEVEL,
    seed: int = 0,
) -> pd.DataFrame:
    """Per cell: best config and loss, near-tie configs, trial counts and compute used.

    Columns: optimizer, scale, chinchilla, non_embedding_params, best_config (dict; None when no finished
    config has a finite loss), best_loss (mean over the best config's seeds; +inf if every result diverged,
    NaN if none finished), best_n_seeds, best_seed_losses (list), best_loss_std (NaN with one seed),
    best_loss_ci_low/high (bootstrap over seeds; NaN with one seed), near_ties (list of configs within
    `tolerance` of the best, best first), n_near_ties, n_trials (all statuses), n_finished, n_diverged,
    device_seconds (sum of known values: compute used; NaN if none known), tokens (sum over trials).
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for s in summarize(trials):
        best = s.best
        ties = s.near_ties(tolerance)
        if best is not None:
            best_loss = best.loss
        elif s.n_finished > 0:
            best_loss = math.inf
        else:
            best_loss = math.nan
        std = ci_low = ci_high = math.nan
        if best is not None and len(best.losses) >= 2:
            std = float(np.std(best.losses, ddof=1))
            if n_boot > 0:
                ci_low, ci_high = percentile_interval(resample_means(best.losses, rng, n_boot), ci)
        rows.append(
            {
                "optimizer": s.key[0],
                "scale": s.key[1],
                "chinchilla": s.key[2],
                "non_embedding_params": s.non_embedding_params,
                "best_config": dict(best.config) if best is not None else None,
                "best_loss": best_loss,
                "best_n_seeds": len(best.losses) if best is not None else 0,
                "best_seed_losses": list(best.losses) if best is not None else [],
                "best_loss_std": std,
                "best_loss_ci_low": ci_low,
                "best_loss_ci_high": ci_high,
                "near_ties": [dict(c.config) for c in ties],
                "n_near_ties": len(ties),
                "n_trials": s.n_trials,
                "n_finished": s.n_finished,
                "n_diverged": s.n_diverged,
                "device_seconds": s.device_seconds,
                "tokens": s.tokens,
            }
        )
    return pd.DataFrame(rows, columns=_BEST_COLUMNS)


_BEST_COLUMNS = [
    "optimizer",
    "scale",
    "chinchilla",
    "non_embedding_params",
    "best_config",
    "best_loss",
    "best_n_seeds",
    "best_seed_losses",
    "best_loss_std",
    "best_loss_ci_low",
    "best_loss_ci_high",
    "near_ties",
    "n_near_ties",
    "n_trials",
    "n_finished",
    "n_diverged",
    "device_seconds",
    "tokens",
]

_MISSING = object()


def _changed_names(config: Mapping[str, object], reference: Mapping[str, object]) -> list[str]:
    """Names whose value differs between two configs (a name present in only one differs)."""
    names = sorted(set(config) | set(reference))
    return [
        n
        for n in names
        if _value_key(config.get(n, _MISSING)) != _value_key(reference.get(n, _MISSING))
        or (n in config) != (n in reference)
    ]


def _sortable(value: object) -> tuple[int, float, str]:
    """Order mixed hyperparameter values: numbers by value, then everything else by text."""
    if is_number(value):
        return (0, float(value), "")  # type: ignore[arg-type]
    return (1, 0.0, str(value))


def sensitivity(trials: pd.DataFrame) -> pd.DataFrame:
    """Per cell, the loss of every one-at-a-time change from the best config (the paper's sensitivity tables).

    One row per finished config that differs from the cell's best in exactly one hyperparameter. Columns:
    optimizer, scale, chinchilla, hparam, value, best_value, loss (mean over seeds; +inf if diverged),
    best_loss, delta (loss - best_loss), diverged (bool), n_seeds. Cells without a finite best are skipped.
    Rows are ordered by cell, hyperparameter name, then value.
    """
    rows: list[dict[str, Any]] = []
    for s in summarize(trials):
        best = s.best
        if best is None:
            continue
        cell_rows: list[dict[str, Any]] = []
        for result in s.configs[1:]:
            changed = _changed_names(result.config, best.config)
            if len(changed) != 1:
                continue
            name = changed[0]
            cell_rows.append(
                {
                    "optimizer": s.key[0],
                    "scale": s.key[1],
                    "chinchilla": s.key[2],
                    "hparam": name,
                    "value": result.config.get(name),
                    "best_value": best.config.get(name),
                    "loss": result.loss,
                    "best_loss": best.loss,
                    "delta": result.loss - best.loss,
                    "diverged": math.isinf(result.loss),
                    "n_seeds": len(result.losses),
                }
            )
        cell_rows.sort(key=lambda r: (r["hparam"], _sortable(r["value"])))
        rows.extend(cell_rows)
    return pd.DataFrame(rows, columns=_SENSITIVITY_COLUMNS)


_SENSITIVITY_COLUMNS = [
    "optimizer",
    "scale",
    "chinchilla",
    "hparam",
    "value",
    "best_value",
    "loss",
    "best_loss",
    "delta",
    "diverged",
    "n_seeds",
]


def stable_hparams(
    trials: pd.DataFrame,
    cells: Iterable[tuple[str, str, float]] | None = None,
    tolerance: float = NEAR_TIE_TOLERANCE,
) -> pd.DataFrame:
    """The Phase II rule: a hyperparameter is stable if one value lies in the near-best set of every cell.

    `cells` are the Phase I cells to judge over (keys (optimizer, scale, chinchilla)); by default every cell
    of the frame (a cell named here but absent raises). A cell with no finite loss has no near-best set and
    is skipped. Judged per optimizer over its cells (PAPER.md section 4, Phase II).
    Columns: optimizer, hparam, stable (bool), common_values (the values in the near-best set of every cell,
    sorted), n_cells. A name missing from a config counts as the value None.
    """
    wanted = {(str(o), str(sc), float(c)) for o, sc, c in cells} if cells is not None else None
    summaries = summarize(trials)
    if wanted is not None:
        absent = wanted - {s.key for s in summaries}
        if absent:
            raise ValueError(f"cells not in the trials frame: {sorted(absent)}")
    per_optimizer: dict[str, list[list[ConfigResult]]] = {}
    for s in summaries:
        if wanted is not None and s.key not in wanted:
            continue
        ties = s.near_ties(tolerance)
        if ties:
            per_optimizer.setdefault(s.key[0], []).append(ties)
    rows: list[dict[str, Any]] = []
    for optimizer, cell_ties in per_optimizer.items():
        names = sorted({name for ties in cell_ties for result in ties for name in result.config})
        for name in names:
            common: dict[str, object] | None = None
            for ties in cell_ties:
                values = {_value_key(r.config.get(name)): r.config.get(name) for r in ties}
                common = values if common is None else {k: v for k, v in common.items() if k in values}
            common_values = sorted((common or {}).values(), key=_sortable)
            rows.append(
                {
                    "optimizer": optimizer,
                    "hparam": name,
                    "stable": bool(common_values),
                    "common_values": common_values,
                    "n_cells": len(cell_ties),
                }
            )
    return pd.DataFrame(rows, columns=["optimizer", "hparam", "stable", "common_values", "n_cells"])


# ---------------------------------------------------------------------------------------------------------------
# Ranking flips along training (PAPER.md section 1, third finding)
# ---------------------------------------------------------------------------------------------------------------


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
