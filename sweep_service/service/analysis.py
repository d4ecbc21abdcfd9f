"""Use cases on finished work: a sweep's speedups over a baseline, its sensitivity tables, its ranking flips and
its hyperparameter importance, and predicted configs for an unseen model size (PAPER.md sections 4 and 5).
Each is a function over a `Database` that returns a frozen dataclass or raises one of
sweep_service/service/errors.py's errors; the REST routers (api/routers/analysis.py, importance.py) only parse,
call and render (DESIGN.md, "Inside sweep_service/").

Everything is computed from the database on each call (imported sweeps count like any other), with the math of
sweep_service.analysis, .ranking, .scaling and .importance. Numbers keep their values: an infinite speedup, a
diverged loss or a failed fit's NaN parameters stay inf or NaN here, and the row's flags and note say why; a
renderer decides how to show them (the REST API sends null: JSON has no infinity). Hyperparameter values are
plain Python (numpy scalars unwrapped) and None where not finite, as the API has always sent them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from db import repository as repo
from db import results
from db.session import Database
from sweep_service import analysis, catalog, ranking
from sweep_service.importance import Importance, importance_table
from sweep_service.service.errors import Conflict, Invalid, NotFound
from sweep_service.service.sweep_data import load_sweep

Method = Literal["robust", "paper"]
HValue = bool | int | float | str | None

METHODS: tuple[Method, ...] = ("robust", "paper")
# Largest parameter count predict takes: 1e13 is ~10,000x the paper's largest model (1.2b); beyond it the
# power laws are pure extrapolation and floats start to overflow.
MAX_PARAMS = 10**13
# The largest data multiple predict takes: the paper ran up to 16x (PAPER.md section 2).
MAX_CHINCHILLA = 1e4
NO_FLIPS = "no two optimizers with best-trial eval curves at one scale and multiple"
IMPORTANCE_METHOD = "functional ANOVA main effects on the observed trials"


class UnknownName(Invalid):
    """A name that is in no registry (an optimizer, a baseline); `valid` lists the ones that are."""

    def __init__(self, field: str, name: str, valid: Sequence[str]) -> None:
        # The name is cut at 100 characters so a huge query does not come back in full.
        super().__init__(field, f"unknown {field} {name[:100]!r}; valid: {', '.join(valid)}")
        self.name = name
        self.valid = tuple(valid)


def _hvalue(value: object) -> HValue:
    """A hyperparameter value as plain Python: numpy scalars unwrapped, non-finite floats None, anything else
    that is not a bool, number or string as text."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        return value
    return str(value)


# ---- speedups ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeedupRow:
    """One cell's speedup over the baseline: analysis.speedups' row and the loss gap to the baseline."""

    scale: str
    optimizer: str
    chinchilla: float
    non_embedding_params: float  # NaN when the scale's count is unknown
    loss: float
    loss_vs_baseline: float
    n_seeds: int
    d_eff: float
    speedup: float
    speedup_ci_low: float
    speedup_ci_high: float
    loss_ci_low: float
    loss_ci_high: float
    interval_source: str
    tied_within_noise: bool
    tied_with: tuple[str, ...]
    beyond_asymptote: bool
    fit_alpha: float
    fit_B: float
    fit_beta: float
    fit_n_points: int
    fit_underdetermined: bool
    fit_unphysical: bool
    fit_d_min: float
    fit_d_max: float
    extrapolated: bool
    extrapolation_factor: float
    note: str


@dataclass(frozen=True)
class Speedups:
    sweep_id: int
    baseline: str
    rows: tuple[SpeedupRow, ...]


def speedup_table(
    trials: pd.DataFrame, baseline: str, n_boot: int, noise: dict[tuple[str, str, float], float] | None = None
) -> pd.DataFrame:
    """analysis.speedups (the baseline fitted on every multiple it ran, PAPER.md section 5), plus
    `loss_vs_baseline`: the cell's best loss minus the baseline's at the same scale and multiple (defined even
    when no curve fits)."""
    sp = analysis.speedups(trials, baseline=baseline, n_boot=n_boot, noise=noise)
    base = sp[sp["optimizer"] == baseline].set_index(["scale", "chinchilla"])["loss"]
    sp["loss_vs_baseline"] = [
        float(r.loss) - float(base[(r.scale, r.chinchilla)]) if (r.scale, r.chinchilla) in base.index else math.nan
        for r in sp.itertuples()
    ]
    return sp


def speedups(db: Database, sweep_id: int, baseline: str = "adamw", n_boot: int = analysis.N_BOOT) -> Speedups:
    """Speedup over `baseline` of every cell's best loss (PAPER.md section 5): per scale the baseline's best
    losses are fitted as L(D) = alpha x D^-B + beta over every multiple it ran at that scale, and each cell's
    D_eff / D is its speedup, with a bootstrap interval of `n_boot` resamples where seeds repeat or the cell
    records its seed noise. The baseline must be a registered optimizer or one in the sweep (UnknownName)."""
    data = load_sweep(db, sweep_id, with_curves=False)
    trials = data.trials
    valid = sorted(set(catalog.optimizer_names()) | {str(o) for o in trials["optimizer"]})
    if baseline not in valid:
        raise UnknownName("baseline", baseline, valid)
    sp = speedup_table(trials, baseline, n_boot, data.noise)
    rows = tuple(
        SpeedupRow(
            scale=str(r["scale"]),
            optimizer=str(r["optimizer"]),
            chinchilla=float(r["chinchilla"]),
            non_embedding_params=float(r["non_embedding_params"]),
            loss=float(r["loss"]),
            loss_vs_baseline=float(r["loss_vs_baseline"]),
            n_seeds=int(r["n_seeds"]),
            d_eff=float(r["d_eff"]),
            speedup=float(r["speedup"]),
            speedup_ci_low=float(r["speedup_ci_low"]),
            speedup_ci_high=float(r["speedup_ci_high"]),
            loss_ci_low=float(r["loss_ci_low"]),
            loss_ci_high=float(r["loss_ci_high"]),
            interval_source=str(r["interval_source"]),
            tied_within_noise=bool(r["tied_within_noise"]),
            tied_with=tuple(str(o) for o in r["tied_with"]),
            beyond_asymptote=bool(r["beyond_asymptote"]),
            fit_alpha=float(r["fit_alpha"]),
            fit_B=float(r["fit_B"]),
            fit_beta=float(r["fit_beta"]),
            fit_n_points=int(r["fit_n_points"]),
            fit_underdetermined=bool(r["fit_underdetermined"]),
            fit_unphysical=bool(r["fit_unphysical"]),
            fit_d_min=float(r["fit_d_min"]),
            fit_d_max=float(r["fit_d_max"]),
            extrapolated=bool(r["extrapolated"]),
            extrapolation_factor=float(r["extrapolation_factor"]),
            note=str(r["note"]),
        )
        for r in sp.to_dict("records")
    )
    return Speedups(sweep_id, baseline, rows)


# ---- ranking flips ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlipRow:
    """One pair of optimizers at one scale and multiple (ranking.ranking_flips)."""

    scale: str
    chinchilla: float
    optimizer_a: str
    optimizer_b: str
    final_leader: str  # "" on an exact tie
    settled_at: float  # NaN: tied at the end
    n_flips: int
    n_points: int
    final_gap: float
    note: str


@dataclass(frozen=True)
class Flips:
    sweep_id: int
    rows: tuple[FlipRow, ...]
    note: str


def flips(db: Database, sweep_id: int) -> Flips:
    """Ranking flips (the paper's third finding): for each pair of optimizers at one scale and multiple, from the
    eval curves of each cell's best trial, the fraction of training after which their ranking no longer changes,
    and how often it changed before."""
    data = load_sweep(db, sweep_id, with_curves=True)
    table = ranking.ranking_flips(data.curves)
    rows = tuple(
        FlipRow(
            scale=str(r["scale"]),
            chinchilla=float(r["chinchilla"]),
            optimizer_a=str(r["optimizer_a"]),
            optimizer_b=str(r["optimizer_b"]),
            final_leader=str(r["final_leader"]),
            settled_at=float(r["settled_at"]),
            n_flips=int(r["n_flips"]),
            n_points=int(r["n_points"]),
            final_gap=float(r["final_gap"]),
            note=str(r["note"]),
        )
        for r in table.to_dict("records")
    )
    return Flips(sweep_id, rows, "" if rows else NO_FLIPS)


# ---- sensitivity ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SensitivityRow:
    """One one-at-a-time change from a cell's best config (analysis.sensitivity)."""

    optimizer: str
    scale: str
    chinchilla: float
    hparam: str
    value: HValue
    best_value: HValue
    loss: float  # mean over seeds; inf when diverged
    best_loss: float
    delta: float  # loss - best_loss
    diverged: bool
    n_seeds: int


@dataclass(frozen=True)
class Sensitivity:
    sweep_id: int
    rows: tuple[SensitivityRow, ...]


def sensitivity(db: Database, sweep_id: int) -> Sensitivity:
    """Per cell, the loss of every finished config that differs from the cell's best in exactly one
    hyperparameter: the paper's sensitivity tables (PAPER.md section 4, Phase I step 5; section 6)."""
    table = analysis.sensitivity(load_sweep(db, sweep_id, with_curves=False).trials)
    rows = tuple(
        SensitivityRow(
            optimizer=str(r["optimizer"]),
            scale=str(r["scale"]),
            chinchilla=float(r["chinchilla"]),
            hparam=str(r["hparam"]),
            value=_hvalue(r["value"]),
            best_value=_hvalue(r["best_value"]),
            loss=float(r["loss"]),
            best_loss=float(r["best_loss"]),
            delta=float(r["delta"]),
            diverged=bool(r["diverged"]),
            n_seeds=int(r["n_seeds"]),
        )
        for r in table.to_dict("records")
    )
    return Sensitivity(sweep_id, rows)


# ---- importance -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellImportance:
    cell: str
    optimizer: str
    n_trials: int  # finished (completed or diverged) trials used
    unexplained: float  # 1 - the sum of the main effects; NaN when nothing was computed
    rows: tuple[Importance, ...]  # most important first


@dataclass(frozen=True)
class Importances:
    sweep_id: int
    method: str
    cells: tuple[CellImportance, ...]


def importance(db: Database, sweep_id: int, cell: str | None = None) -> Importances:
    """Per cell (or the one named), each searched hyperparameter's importance: a functional ANOVA's main effects
    computed on the observed trials (sweep_service.importance). A cell without trials in the sweep is NotFound."""
    trials = load_sweep(db, sweep_id, with_curves=False).trials
    if cell is not None and cell not in set(trials["cell"]):
        raise NotFound(f"sweep {sweep_id} has no trials in cell {cell[:200]!r}")
    cells = tuple(
        CellImportance(
            cell=str(c["cell"]),
            optimizer=str(c["optimizer"]),
            n_trials=int(c["n_trials"]),
            unexplained=float(c["unexplained"]),
            rows=tuple(c["rows"]),
        )
        for c in importance_table(trials, cell)
    )
    return Importances(sweep_id, IMPORTANCE_METHOD, cells)


# ---- predict ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HparamFit:
    """How one hyperparameter was predicted (sweep_service/scaling.py; PAPER.md section 4, Phase III)."""

    name: str
    method: Method
    form: str  # the form used (nearest_cell after a fallback)
    params: tuple[float, ...]
    error: float  # NaN without one
    form_errors: Mapping[str, float]
    n_points: int
    holdout: tuple[str, float] | None  # paper: (scale, chinchilla) of the held-out cell
    holdout_actual: HValue
    holdout_predicted: HValue
    raw: HValue  # the form's value at the target, before guard and snap
    predicted: HValue  # None: not finite at this size
    low: float | None  # robust: the interval from the leave-one-out residuals
    high: float | None
    fallback: bool
    note: str


@dataclass(frozen=True)
class Prediction:
    optimizer: str
    non_embedding_params: int
    chinchilla: float
    family: str  # whose cells were fitted (and whose grid snaps)
    snap: bool
    method: Method
    config: Mapping[str, HValue]
    fits: tuple[HparamFit, ...]
    cells_used: int
    scales_used: Mapping[str, int]  # scale -> non-embedding parameters of the fitted cells
    sweeps_used: tuple[int, ...]
    dropped: tuple[str, ...]  # names the trainer does not take for this optimizer: not predicted
    fallbacks: tuple[str, ...]  # hyperparameters whose fit fell back to the nearest cell
    note: str


def _families() -> list[str]:
    """The catalog's model families (paper, tiny)."""
    return sorted({family for family, _ in catalog.scale_families().values()})


def _prediction(
    fit: analysis.ScalingFit, n_params: float, chinchilla: float, grid: list[Any] | None
) -> analysis.HparamPrediction | None:
    """One hyperparameter at (N, C), None where the fit's value overflows."""
    try:
        return analysis.predict_hparam(fit, n_params, chinchilla, grid)
    except (OverflowError, ValueError, ZeroDivisionError):
        return None


def _trainer_names(optimizer: str, family: str) -> set[str]:
    """The hyperparameter names the trainer takes for `optimizer` in `family`: those `resolve_hparams` accepts
    as overrides (the check `sweep-service train --set` and workers/trainer.py run). Imports torch."""
    from workers.optimizers import get_spec, resolve_hparams

    return set(resolve_hparams(get_spec(optimizer), family))


def _grid(optimizer: str, family: str) -> dict[str, list[Any]] | None:
    """The optimizer's search grid for the family, None if it has none. Imports torch."""
    from workers.optimizers import REGISTRY

    space = REGISTRY[optimizer].spaces.get(family)
    return None if space is None else {k: list(v) for k, v in space.grid.items()}


def _check_target(optimizer: str, params: int, chinchilla: float, family: str | None, method: str) -> None:
    """The checks the API's query parameters make before the call, for callers without them (the CLI, scripts)."""
    names = catalog.optimizer_names()
    if optimizer not in names:
        raise UnknownName("optimizer", optimizer, names)
    if isinstance(params, bool) or not isinstance(params, int) or not 1 <= params <= MAX_PARAMS:
        raise Invalid("params", f"must be a whole number of parameters from 1 to {MAX_PARAMS:.0e}")
    if not (math.isfinite(chinchilla) and 0 < chinchilla <= MAX_CHINCHILLA):
        raise Invalid("chinchilla", f"must be a finite multiple above 0, at most {MAX_CHINCHILLA:g}")
    if family is not None and family not in _families():
        raise Invalid("family", f"must be one of {', '.join(_families())}")
    if method not in METHODS:
        raise Invalid("method", f"must be one of {', '.join(METHODS)}")


# The family /predict reports for one sweep's cells that are not one catalog family's presets (sweep_id).
CUSTOM_FAMILY = "custom"


def predict(
    db: Database,
    optimizer: str,
    params: int,
    chinchilla: float = 1.0,
    snap: bool = False,
    family: str | None = None,
    method: Method = "robust",
    sweep_id: int | None = None,
) -> Prediction:
    """Predicted hyperparameters of `optimizer` for a model of `params` non-embedding parameters trained at
    `chinchilla` x 20 x N tokens (PAPER.md section 4, Phase III), from the best configs of every finished cell of
    the optimizer, in every sweep (imported ones too), of one model family (default: that of the catalog scale
    nearest to `params`); with `sweep_id`, of that sweep only (every family, unless `family` is given).
    `method="paper"` is the authors' procedure (the 12 cells of the three smallest sizes x
    1-8x, a raw power law over the 10 middle ones, the last held out; unrounded). `method="robust"` ranks
    constant, nearest-cell, log-linear and bounded power law forms by leave-one-cell-out error, gives each value
    an interval from those residuals, and replaces a value outside [min/2, 2 x max] of the cells by the nearest
    cell's (`fallbacks`). `snap` snaps each value to the optimizer's grid for the family. Only names the trainer
    takes for the optimizer are predicted: the others (imported results carry e.g. lr_schedule or nesterov) are
    listed in `dropped`.

    NotFound: no finished work of the optimizer (of the family) to fit. Conflict: the finished cells do not span
    two model sizes, or the fit fails. UnknownName / Invalid: a bad argument."""
    _check_target(optimizer, params, chinchilla, family, method)
    # No scale name: the family of the catalog scale nearest to N in log space.
    target_family = family or catalog.family_of("", float(params))
    assert target_family is not None  # params >= 1 is a usable N
    with db.session() as s:
        if sweep_id is not None and repo.get_sweep(s, sweep_id) is None:
            raise NotFound(f"no sweep {sweep_id}")
        # with sweep_id, one sweep's cells only (e.g. an external sweep's own model and custom scales)
        trials = results.finished_trials(s, catalog.scale_params(), optimizer, sweep_id)
    if trials.empty and sweep_id is not None:
        raise NotFound(f"no finished trials of {optimizer!r} in sweep {sweep_id}")
    if trials.empty:
        raise NotFound(
            f"no finished trials of {optimizer!r} in any sweep: run a sweep, or import results "
            "(`sweep-service import-results paper`)"
        )
    best = analysis.best_per_cell(trials, n_boot=0)
    best["family"] = [
        catalog.family_of(str(sc), float(n)) for sc, n in zip(best["scale"], best["non_embedding_params"], strict=True)
    ]
    # One sweep without `family`: all its cells. Their family is the catalog's where every scale is one family's
    # preset; otherwise (an external sweep's custom scales, or mixed families) CUSTOM_FAMILY: no catalog grid to
    # snap to and no trainer whose names to keep (an outside trainer has its own).
    whole_sweep = sweep_id is not None and family is None
    if whole_sweep:
        own = {str(f) for f in best["family"]}
        presets = set(best["scale"].astype(str)) <= set(catalog.scale_families())
        target_family = own.pop() if presets and len(own) == 1 else CUSTOM_FAMILY
    usable = best[
        ((best["family"] == target_family) | whole_sweep)
        & best["best_config"].map(lambda c: isinstance(c, dict))
        & best["non_embedding_params"].map(lambda n: math.isfinite(n) and n > 0)
    ]
    if usable.empty:
        have = sorted({str(f) for f in best["family"] if f is not None})
        raise NotFound(
            f"no finished {target_family}-family cell of {optimizer!r} with a finite best loss and a known "
            f"parameter count (families with results: {', '.join(have) or 'none'}; pass family=)"
        )
    sizes = {str(sc): int(n) for sc, n in zip(usable["scale"], usable["non_embedding_params"], strict=True)}
    if len(set(sizes.values())) < 2:
        raise Conflict(
            f"{optimizer!r} has finished {target_family}-family cells at one model size only "
            f"({', '.join(sizes)}): a scaling law in N needs at least two sizes"
        )
    # Imported results carry names our trainer does not take (the paper's Muon and Scion configs hold
    # lr_schedule, its Adam-family ones nesterov): a config with them would be rejected by resolve_hparams.
    present = list(dict.fromkeys(k for c in usable["best_config"] for k in c))
    known = set(present) if target_family == CUSTOM_FAMILY else _trainer_names(optimizer, target_family)
    dropped = sorted(n for n in present if n not in known)
    try:
        fits = analysis.fit_hparam_scaling(
            usable, optimizer=optimizer, hparams=[n for n in present if n in known], method=method
        )
    except ValueError as exc:
        raise Conflict(f"cannot fit {optimizer!r}: {exc}") from None

    notes: list[str] = []
    grid: dict[str, list[Any]] | None = None
    if snap and target_family == CUSTOM_FAMILY:
        notes.append(f"sweep {sweep_id}'s scales are not one catalog family's: no grid to snap to, values unsnapped")
    elif snap:
        grid = _grid(optimizer, target_family)
        if grid is None:
            notes.append(f"{optimizer} has no {target_family} grid: values are not snapped")
    if dropped:
        notes.append(f"not predicted, the trainer does not take them for {optimizer}: {', '.join(dropped)}")
    if method == "paper" and not snap:
        notes.append("method=paper values are unrounded, as the authors' fit gives them: pass snap=true to train")
    out: list[HparamFit] = []
    config: dict[str, HValue] = {}
    fallbacks: list[str] = []
    for name, fit in fits.items():
        pred = _prediction(fit, float(params), chinchilla, grid.get(name) if grid is not None else None)
        predicted = _hvalue(pred.value) if pred is not None else None
        config[name] = predicted
        fit_notes = [pred.note] if pred is not None and pred.note else []
        if pred is None or predicted is None:
            fit_notes.append("not finite at this size")
        if pred is not None and pred.fallback:
            fallbacks.append(name)
        out.append(
            HparamFit(
                name=name,
                method=method,
                form=pred.form if pred is not None else fit.form,
                params=tuple(float(v) for v in fit.params),
                error=float(fit.error),
                form_errors=dict(fit.form_errors),
                n_points=fit.n_points,
                holdout=fit.holdout,
                holdout_actual=_hvalue(fit.holdout_actual),
                holdout_predicted=_hvalue(fit.holdout_predicted),
                raw=_hvalue(pred.raw) if pred is not None else None,
                predicted=predicted,
                low=pred.low if pred is not None else None,
                high=pred.high if pred is not None else None,
                fallback=bool(pred is not None and pred.fallback),
                note="; ".join(fit_notes),
            )
        )
    if fallbacks:
        notes.append(f"outside [min/2, 2 x max] of the cells, the nearest cell's value instead: {', '.join(fallbacks)}")
    if any(v is None for v in config.values()):
        notes.append("some predictions are not finite numbers at this size (null)")
    sweeps = sorted({int(i) for i in trials[trials["scale"].isin(list(sizes))]["sweep_id"]})
    return Prediction(
        optimizer=optimizer,
        non_embedding_params=params,
        chinchilla=chinchilla,
        family=target_family,
        snap=snap,
        method=method,
        config=config,
        fits=tuple(out),
        cells_used=len(usable),
        scales_used=sizes,
        sweeps_used=tuple(sweeps),
        dropped=tuple(dropped),
        fallbacks=tuple(fallbacks),
        note="; ".join(notes),
    )
