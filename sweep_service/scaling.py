"""Hyperparameter scaling laws (PAPER.md section 4, Phase III): fit the best configs of the finished cells and
predict a config for an unseen model size N and data multiple C.

Two methods:

- ``paper``: the authors' procedure exactly (PAPER.md section 4; Marin's experiments/optimizer_sweep/Analysis,
  hyper_scaling): the 12 cells of the three smallest model sizes x C in {1, 2, 4, 8}, ordered by size then C;
  every hyperparameter whose value in the last cell is a number is fitted on its raw values as
  h(N, C) = A x N^a x C^b + B with curve_fit, p0 = [0, -0.5, -0.5, mean of the first 11 values],
  maxfev 200000, over the 10 middle cells; the last cell is held out (its relative error reported). A
  hyperparameter with one value in every cell stays that value; booleans, strings, lr_schedule and
  muon_to_adam_lr are not fitted (the largest cell's value is returned, flagged). Values are unrounded.
- ``robust`` (the default): per hyperparameter, candidate forms -- constant (the median), nearest_cell (the
  value of the cell nearest in log N, log C), log_linear (log h linear in log N and log C; positive values
  only) and bounded_power_law (the paper's form with exponents in [-1, 1]) -- are ranked by their
  leave-one-cell-out (LOO) relative error, and the best is used. A prediction outside `allowed_range` of the
  cells' values ([min/2, 2 x max]) is flagged and replaced by the nearest cell's value. Every value carries an
  interval from the chosen form's LOO residuals.

Why a robust default: on the paper's released results the authors' fit of AdamW's weight decay (values 0.1 and
0.2 only) passes its held-out cell and then predicts 20.8 at 1.2B 1x over 14 cells (issue 12); values that
are steps on a grid are not power laws, and a fit that may leave the cells' range needs a guard.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from sweep_service.fitting import quiet_curve_fit
from sweep_service.ranking import is_number

__all__ = [
    "METHODS",
    "PAPER_MULTIPLES",
    "HparamPrediction",
    "ScalingFit",
    "allowed_range",
    "fit_hparam_scaling",
    "predict_hparam",
    "predict_hparams",
    "scaling_fits_frame",
    "snap_to_grid",
]

Method = Literal["paper", "robust"]
METHODS: tuple[str, ...] = ("robust", "paper")
HParamValue = float | int | bool | str

# PAPER.md section 4, Phase III: the three smallest sizes x these multiples, 12 cells.
PAPER_MULTIPLES: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
PAPER_N_SIZES = 3
PAPER_MAXFEV = 200_000  # as the authors' script
# Names the authors' script leaves out of the fit (PAPER.md section 4).
PAPER_NOT_FITTED = frozenset({"lr_schedule", "muon_to_adam_lr"})
# Robust forms, simplest first: an equal LOO error goes to the simpler form.
ROBUST_FORMS: tuple[str, ...] = ("constant", "nearest_cell", "log_linear", "bounded_power_law")
# Exponent bounds of the robust power law: |a|, |b| <= 1, i.e. no hyperparameter grows faster than N or C
# (ours: the paper's fits of its released values all have |exponent| < 0.6; a larger one is extrapolation noise).
EXPONENT_BOUND = 1.0
ROBUST_MAXFEV = 20_000
# allowed_range: [min / RANGE_FACTOR, max x RANGE_FACTOR] of the cells' values (issue 12: [min/2, 2 x max]).
RANGE_FACTOR = 2.0


def allowed_range(values: Sequence[float]) -> tuple[float, float]:
    """[min / 2, 2 x max] of `values` (a negative end is widened the other way: [2 x min, max / 2])."""
    low, high = float(min(values)), float(max(values))
    return (low / RANGE_FACTOR if low >= 0 else low * RANGE_FACTOR, high * RANGE_FACTOR if high >= 0 else high / 2)


@dataclass(frozen=True)
class Point:
    scale: str
    chinchilla: float
    n_params: float
    value: HParamValue


@dataclass(frozen=True)
class ScalingFit:
    """How one hyperparameter is predicted.

    `form`: paper method: power_law, constant, not_fitted (non-numeric or excluded: the largest cell's value),
    failed (curve_fit did not converge: the largest cell's value); robust method: one of ROBUST_FORMS or
    not_fitted (non-numeric: the largest cell's value). `params`: (A, a, b, B) of a power law with N in raw
    units, or (c0, cN, cC) of log h = c0 + cN log N + cC log C. `error`: robust: the chosen form's mean LOO
    error (`_loo_error`); paper: the held-out cell's relative error. `form_errors`: each robust form's LOO error.
    `residuals`: LOO residuals of the chosen form (log ratios actual/predicted when `log_residuals`, else
    actual - predicted), the interval's source.
    """

    name: str
    method: str
    form: str
    points: tuple[Point, ...]
    integer: bool
    params: tuple[float, ...] = ()
    value: HParamValue | None = None
    error: float = math.nan
    form_errors: dict[str, float] = field(default_factory=dict)
    residuals: tuple[float, ...] = ()
    log_residuals: bool = False
    holdout: tuple[str, float] | None = None
    holdout_actual: HParamValue | None = None
    holdout_predicted: float | None = None
    note: str = ""

    @property
    def n_points(self) -> int:
        return len(self.points)

    @property
    def numeric(self) -> bool:
        return all(is_number(p.value) for p in self.points)

    def range(self) -> tuple[float, float] | None:
        """allowed_range of the cells' values, None when not numeric."""
        return allowed_range([float(p.value) for p in self.points]) if self.numeric else None

    def raw(self, n_params: float, chinchilla: float) -> HParamValue:
        """The form's value at (N, C): unrounded, unguarded."""
        return _evaluate(self.form, self.params, self.points, self.value, n_params, chinchilla)


@dataclass(frozen=True)
class HparamPrediction:
    """One predicted hyperparameter: `value` (rounded for integers under robust, snapped with a grid), `raw`
    (the form's value before guard, rounding and snapping), the interval [low, high] (None without one),
    `fallback` (outside allowed_range or not finite: the nearest cell's value was used instead)."""

    name: str
    value: HParamValue | None
    raw: HParamValue | None
    low: float | None
    high: float | None
    form: str
    fallback: bool
    note: str


def snap_to_grid(value: HParamValue, grid: Sequence[HParamValue]) -> HParamValue:
    """The grid value nearest `value`: in log space when the value and every grid value are positive numbers
    (learning rates, epsilons, batch sizes), linearly otherwise (a grid holding 0, like weight decay).
    A non-numeric value is returned unchanged (it is already one of the observed values)."""
    if not grid:
        raise ValueError("empty grid")
    numbers = [g for g in grid if is_number(g)]
    if not is_number(value) or len(numbers) != len(grid):
        return value
    v = float(value)
    if v > 0 and all(float(g) > 0 for g in numbers):
        return min(numbers, key=lambda g: abs(math.log(float(g)) - math.log(v)))
    return min(numbers, key=lambda g: abs(float(g) - v))


# ---- forms ------------------------------------------------------------------------------------------------------


def _power(x: np.ndarray, a: float, b: float, c: float, d: float) -> np.ndarray:
    """A x N^a x C^b + B with x = (N, C) stacked on axis 0; shape (2, n) -> (n,)."""
    return a * np.power(x[0], b) * np.power(x[1], c) + d


def _nearest(points: Sequence[Point], n_params: float, chinchilla: float) -> Point:
    """The point nearest (N, C) in (log N, log C); ties to the larger model, then the larger multiple."""
    return min(
        points,
        key=lambda p: (
            math.hypot(math.log(p.n_params / n_params), math.log(p.chinchilla / chinchilla)),
            -p.n_params,
            -p.chinchilla,
        ),
    )


def _evaluate(
    form: str,
    params: Sequence[float],
    points: Sequence[Point],
    value: HParamValue | None,
    n_params: float,
    chinchilla: float,
) -> HParamValue:
    if form in ("power_law", "bounded_power_law"):
        a, b, c, d = params
        return float(a * float(n_params) ** b * float(chinchilla) ** c + d)
    if form == "log_linear":
        c0, cn, cc = params
        return float(math.exp(c0 + cn * math.log(n_params) + cc * math.log(chinchilla)))
    if form == "nearest_cell":
        return _nearest(points, n_params, chinchilla).value
    if value is None:
        raise ValueError(f"form {form!r} has no value")
    return value


def _fit_power(
    x: np.ndarray, y: np.ndarray, p0: Sequence[float], maxfev: int, bounds: Any = (-math.inf, math.inf)
) -> np.ndarray | None:
    """(A, a, b, B) of the power law fitted to (x, y), or None when curve_fit fails."""
    fitted = quiet_curve_fit(_power, x, y, p0, maxfev, bounds)
    return None if fitted is None else fitted[0]


def _fit_form(form: str, points: Sequence[Point]) -> tuple[tuple[float, ...], HParamValue | None] | None:
    """(params, value) of `form` fitted to `points`, or None when it cannot be fitted to them."""
    y = np.array([float(p.value) for p in points], np.float64)
    n = np.array([p.n_params for p in points], np.float64)
    c = np.array([p.chinchilla for p in points], np.float64)
    if form == "constant":
        return (), float(np.median(y))
    if form == "nearest_cell":
        return (), None
    if form == "log_linear":
        if len(points) < 4 or np.any(y <= 0):  # 3 coefficients + 1 so the fit is not exact
            return None
        design = np.stack([np.ones_like(n), np.log(n), np.log(c)], axis=1)  # (n, 3)
        coef, *_ = np.linalg.lstsq(design, np.log(y), rcond=None)
        return tuple(float(v) for v in coef), None
    if form == "bounded_power_law":
        if len(points) < 5:  # 4 parameters + 1
            return None
        # In units of N / N_ref so A is of the order of h; converted back to raw N below.
        n_ref = float(np.exp(np.mean(np.log(n))))
        spread = float(np.std(y)) or 1.0
        inf, e = math.inf, EXPONENT_BOUND
        bounds = ([-inf, -e, -e, -inf], [inf, e, e, inf])
        popt = _fit_power(np.stack([n / n_ref, c]), y, (spread, -0.5, -0.5, float(np.mean(y))), ROBUST_MAXFEV, bounds)
        if popt is None:
            return None
        a, b, cc, d = (float(v) for v in popt)
        return (a * n_ref ** (-b), b, cc, d), None
    raise ValueError(f"unknown form {form!r}")


def _rel_error(predicted: float, actual: float) -> float:
    if actual == 0:
        return 0.0 if predicted == 0 else abs(predicted)  # an absolute error where no relative one exists
    return abs(predicted - actual) / abs(actual)


def _loo(form: str, points: Sequence[Point]) -> tuple[float, list[float], list[float]] | None:
    """Leave-one-cell-out: (mean relative error, predictions, actuals) of `form`, None if a fold cannot fit."""
    preds: list[float] = []
    actuals: list[float] = []
    for i, held in enumerate(points):
        rest = [p for j, p in enumerate(points) if j != i]
        fitted = _fit_form(form, rest)
        if fitted is None:
            return None
        try:
            pred = float(_evaluate(form, fitted[0], rest, fitted[1], held.n_params, held.chinchilla))
        except (OverflowError, ValueError):
            return None
        if not math.isfinite(pred):
            return None
        preds.append(pred)
        actuals.append(float(held.value))
    return float(np.mean([_loo_error(p, a, actuals) for p, a in zip(preds, actuals, strict=True)])), preds, actuals


def _loo_error(predicted: float, actual: float, actuals: Sequence[float]) -> float:
    """|log(predicted / actual)| where every value is positive (eps spans 1e-25..1e-10: a relative error there
    only sees the largest), else the relative error; a non-positive prediction of positive values is +inf."""
    if all(a > 0 for a in actuals):
        return abs(math.log(predicted / actual)) if predicted > 0 else math.inf
    return _rel_error(predicted, actual)


def _residuals(preds: Sequence[float], actuals: Sequence[float]) -> tuple[tuple[float, ...], bool]:
    """Log ratios actual/predicted where every value is positive, else differences actual - predicted."""
    if all(p > 0 for p in preds) and all(a > 0 for a in actuals):
        return tuple(math.log(a / p) for p, a in zip(preds, actuals, strict=True)), True
    return tuple(a - p for p, a in zip(preds, actuals, strict=True)), False


# ---- methods ----------------------------------------------------------------------------------------------------


def _largest_value(points: Sequence[Point]) -> HParamValue:
    return max(points, key=lambda p: (p.n_params, p.chinchilla)).value


def _robust_fit(name: str, points: list[Point]) -> ScalingFit:
    integer = all(isinstance(p.value, int | np.integer) and is_number(p.value) for p in points)
    if not all(is_number(p.value) for p in points):
        return ScalingFit(name, "robust", "not_fitted", tuple(points), False, value=_largest_value(points),
                          note="not numeric: the largest cell's value")  # fmt: skip
    values = {float(p.value) for p in points}
    if len(values) == 1:
        return ScalingFit(name, "robust", "constant", tuple(points), integer, value=points[0].value, error=0.0,
                          note="the same value in every cell")  # fmt: skip
    if len(points) < 2:
        return ScalingFit(name, "robust", "nearest_cell", tuple(points), integer, note="one cell: its value")
    scored: dict[str, tuple[float, list[float], list[float]]] = {}
    for form in ROBUST_FORMS:
        result = _loo(form, points)
        if result is not None:
            scored[form] = result
    # Lowest LOO error; ROBUST_FORMS order breaks ties (min keeps the first of equal keys).
    form = min(scored, key=lambda f: scored[f][0])
    fitted = _fit_form(form, points)
    if fitted is None:  # the full fit failed where every fold fitted: use the nearest cell
        form, fitted = "nearest_cell", ((), None)
    residuals, in_log = _residuals(scored[form][1], scored[form][2])
    return ScalingFit(
        name, "robust", form, tuple(points), integer, params=fitted[0], value=fitted[1], error=scored[form][0],
        form_errors={f: s[0] for f, s in scored.items()}, residuals=residuals, log_residuals=in_log,
    )  # fmt: skip


def _paper_cells(points: list[Point]) -> tuple[list[Point], str]:
    """The paper's 12 cells (three smallest sizes x 1, 2, 4, 8), ordered by size then C; a note if any lack."""
    sizes = sorted({p.n_params for p in points})[:PAPER_N_SIZES]
    chosen = sorted(
        (p for p in points if p.n_params in sizes and p.chinchilla in PAPER_MULTIPLES),
        key=lambda p: (p.n_params, p.chinchilla),
    )
    expected = PAPER_N_SIZES * len(PAPER_MULTIPLES)
    note = "" if len(chosen) == expected else f"{len(chosen)} of the paper's {expected} cells"
    return chosen, note


def _paper_fit(name: str, all_points: list[Point]) -> ScalingFit:
    points, layout_note = _paper_cells(all_points)
    if len(points) < 3:
        raise ValueError(
            f"method=paper needs the cells of the three smallest sizes x {list(PAPER_MULTIPLES)}; "
            f"{name!r} has {len(points)} of them"
        )
    last = points[-1]
    held = (last.scale, last.chinchilla)
    notes = [layout_note] if layout_note else []
    base: dict[str, Any] = {"holdout": held, "holdout_actual": last.value}
    if name in PAPER_NOT_FITTED or not is_number(last.value):
        notes.append("not fitted by the paper's procedure: the largest cell's value")
        return ScalingFit(name, "paper", "not_fitted", tuple(points), False, value=last.value,
                          note="; ".join(notes), **base)  # fmt: skip
    values = [float(p.value) for p in points if is_number(p.value)]
    if len(values) != len(points):
        notes.append("not numeric in every cell: the largest cell's value")
        return ScalingFit(name, "paper", "not_fitted", tuple(points), False, value=last.value,
                          note="; ".join(notes), **base)  # fmt: skip
    if len(set(values)) == 1:
        return ScalingFit(name, "paper", "constant", tuple(points), False, value=last.value, error=0.0,
                          note="the same value in every cell", **base)  # fmt: skip
    middle = points[1:-1]
    y = np.array(values[1:-1], np.float64)
    x = np.stack([np.array([p.n_params for p in middle]), np.array([p.chinchilla for p in middle])])
    p0 = (0.0, -0.5, -0.5, float(np.mean(values[:-1])))  # mean of the first 11 (all but the held-out cell)
    popt = _fit_power(x, y, p0, PAPER_MAXFEV) if len(middle) >= 1 else None
    if popt is None:
        notes.append("curve_fit did not converge: the largest cell's value")
        return ScalingFit(name, "paper", "failed", tuple(points), False, value=last.value,
                          note="; ".join(notes), **base)  # fmt: skip
    params = tuple(float(v) for v in popt)
    predicted = float(_evaluate("power_law", params, points, None, last.n_params, last.chinchilla))
    return ScalingFit(
        name, "paper", "power_law", tuple(points), False, params=params,
        error=_rel_error(predicted, float(last.value)), holdout_predicted=predicted,
        note="; ".join(notes), **base,
    )  # fmt: skip


def fit_hparam_scaling(
    cells: pd.DataFrame,
    optimizer: str | None = None,
    hparams: Sequence[str] | None = None,
    method: Method = "robust",
) -> dict[str, ScalingFit]:
    """One ScalingFit per hyperparameter over the cells' best configs (`analysis.best_per_cell`'s frame:
    optimizer, scale, chinchilla, non_embedding_params, best_config). `optimizer` picks one of several;
    `hparams` defaults to every name in the best configs; `method` is "robust" or "paper" (module docstring)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if optimizer is not None:
        cells = cells[cells["optimizer"] == optimizer]
    optimizers = sorted(set(cells["optimizer"]))
    if len(optimizers) > 1:
        raise ValueError(f"cells of several optimizers {optimizers}: pass optimizer=")
    rows = [r for r in cells.to_dict("records") if isinstance(r["best_config"], dict)]
    if not rows:
        raise ValueError("no cell with a best config to fit")
    for r in rows:
        n = r["non_embedding_params"]
        if not (is_number(n) and math.isfinite(float(n)) and float(n) > 0):
            raise ValueError(f"cell {r['scale']} x{r['chinchilla']} has no positive non_embedding_params")
    names = list(hparams) if hparams is not None else list(dict.fromkeys(k for r in rows for k in r["best_config"]))
    fits: dict[str, ScalingFit] = {}
    for name in names:
        points = [
            Point(str(r["scale"]), float(r["chinchilla"]), float(r["non_embedding_params"]), r["best_config"][name])
            for r in rows
            if name in r["best_config"]
        ]
        if not points:
            raise ValueError(f"hyperparameter {name!r} is in no best config")
        fits[name] = _paper_fit(name, points) if method == "paper" else _robust_fit(name, points)
    return fits


# ---- prediction -------------------------------------------------------------------------------------------------


def _interval(fit: ScalingFit, value: float, residuals: Sequence[float], in_log: bool) -> tuple[float, float] | None:
    if not residuals:
        return None
    lo, hi = min(residuals), max(residuals)
    if in_log and value > 0:
        return (value * math.exp(lo), value * math.exp(hi))
    return (value + lo, value + hi)


def predict_hparam(
    fit: ScalingFit, n_params: float, chinchilla: float, grid: Sequence[HParamValue] | None = None
) -> HparamPrediction:
    """`fit` at (N, C). Robust: guarded by allowed_range (else the nearest cell's value, flagged), integers
    rounded, interval from the LOO residuals. Paper: the raw value, no guard, no interval. With `grid`, the
    value is snapped to its nearest grid value (snap_to_grid)."""
    notes = [fit.note] if fit.note else []
    try:
        raw: HParamValue | None = fit.raw(n_params, chinchilla)
    except (OverflowError, ValueError, ZeroDivisionError):
        raw = None
    value = raw
    fallback = False
    low = high = None
    form = fit.form
    if fit.method == "robust" and fit.numeric and fit.points:
        bounds = fit.range()
        assert bounds is not None
        number = float(raw) if raw is not None and is_number(raw) else math.nan
        if not (math.isfinite(number) and bounds[0] <= number <= bounds[1]):
            fallback = True
            nearest = _nearest(fit.points, n_params, chinchilla)
            value = nearest.value
            notes.append(
                f"{fit.form} gave {number:.4g}, outside [{bounds[0]:.4g}, {bounds[1]:.4g}] (min/2, 2 x max of the "
                f"cells): the nearest cell's value ({nearest.scale} x{nearest.chinchilla:g}) instead"
            )
            form = "nearest_cell"
            loo = _loo("nearest_cell", list(fit.points)) if len(fit.points) >= 2 else None
            residuals, in_log = _residuals(loo[1], loo[2]) if loo is not None else ((), False)
        else:
            residuals, in_log = fit.residuals, fit.log_residuals
        assert value is not None
        span = _interval(fit, float(value), residuals, in_log)
        if span is not None:
            low, high = span
        if fit.integer and is_number(value):
            value = round(float(value))
    if grid is not None and value is not None:
        value = snap_to_grid(value, grid)
    if raw is not None and is_number(raw) and not math.isfinite(float(raw)):
        raw = None
    return HparamPrediction(fit.name, value, raw, low, high, form, fallback, "; ".join(notes))


def predict_hparams(
    fits: Mapping[str, ScalingFit],
    n_params: float,
    chinchilla: float,
    grid: Mapping[str, Sequence[HParamValue]] | None = None,
) -> dict[str, HParamValue | None]:
    """Every fit's predicted value at (N, C), snapped to `grid` where it has the name."""
    return {
        name: predict_hparam(fit, n_params, chinchilla, grid.get(name) if grid is not None else None).value
        for name, fit in fits.items()
    }


def scaling_fits_frame(fits: Mapping[str, ScalingFit]) -> pd.DataFrame:
    """The fits as a table: hparam, method, form, params, value, n_points, error, form_errors, holdout, note."""
    return pd.DataFrame(
        [
            {
                "hparam": f.name,
                "method": f.method,
                "form": f.form,
                "params": list(f.params),
                "value": f.value,
                "n_points": f.n_points,
                "error": f.error,
                "form_errors": dict(f.form_errors),
                "holdout": f.holdout,
                "holdout_predicted": f.holdout_predicted,
                "note": f.note,
            }
            for f in fits.values()
        ]
    )
