"""Analysis of finished work: a sweep's speedups over AdamW and sensitivity tables, and predicted configs for
an unseen model size (sweep_service.analysis; PAPER.md sections 4 and 5).

Everything is computed from the database on each request (imported sweeps count like any other). Numbers
that are not finite (an infinite speedup, a diverged loss, a failed fit's parameters) are sent as null: JSON
has no infinity, and the row's flags and note say why.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BeforeValidator

from api.deps import DatabaseDep, Guarded, IdPath, unknown_name
from api.schemas import (
    FlipRow,
    FlipsResponse,
    HeldOutCell,
    HparamFitOut,
    PredictResponse,
    SensitivityResponse,
    SensitivityRow,
    SpeedupRow,
    SpeedupsResponse,
)
from db import results
from sweep_service import analysis, ranking
from sweep_service.importer import scale_params
from sweep_service.report import SweepData, SweepNotFound, load_sweep, speedup_table

router = APIRouter(tags=["analysis"], dependencies=Guarded)

# Bootstrap resamples per request where seeds repeat: each one refits the baseline curve (one curve_fit), so
# 200 keeps a request well under a second while the 95% interval's ends move by ~1% (analysis.N_BOOT is 1000).
N_BOOT_API = 200
# Largest parameter count /predict takes: 1e13 is ~10,000x the paper's largest model (1.2b); beyond it the
# power laws are pure extrapolation and floats start to overflow.
MAX_PARAMS = 10**13
# The largest data multiple /predict takes: the paper ran up to 16x (PAPER.md section 2).
MAX_CHINCHILLA = 1e4
NAME = r"^[^\x00-\x1f\x7f]+$"  # printable (PostgreSQL cannot bind a NUL), as api.deps.NAME_PATTERN

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such sweep"}}


def _float(value: object) -> float | None:
    """A finite float, else None (JSON has no infinity or NaN)."""
    if isinstance(value, bool | np.bool_) or value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value: object) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def _hvalue(value: object) -> bool | int | float | str | None:
    """A hyperparameter value as JSON: numpy scalars unwrapped, non-finite floats null, anything else as text."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return _float(value)
    if isinstance(value, str):
        return value
    return str(value)


def _load_data(db: Any, sweep_id: int) -> SweepData:
    try:
        return load_sweep(db, sweep_id, with_curves=False)
    except SweepNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None


def _load(db: Any, sweep_id: int) -> pd.DataFrame:
    try:
        return load_sweep(db, sweep_id, with_curves=False).trials
    except SweepNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None


@router.get(
    "/sweeps/{sweep_id}/speedups",
    response_model=SpeedupsResponse,
    responses={**NOT_FOUND, 422: {"description": "unknown baseline optimizer (the message lists the valid ones)"}},
)
def get_speedups(
    sweep_id: IdPath,
    db: DatabaseDep,
    baseline: Annotated[
        str, Query(min_length=1, max_length=64, pattern=NAME, description="optimizer whose L(D) is fitted")
    ] = "adamw",
) -> SpeedupsResponse:
    """Speedup over the baseline (default AdamW) of every cell's best loss (PAPER.md section 5): per scale the
    baseline's best losses are fitted as L(D) = alpha x D^-B + beta over every multiple it ran at that scale (16x
    included, as the authors' script), and each cell's D_eff / D is its speedup. A scale
    where the baseline cannot be fitted has null speedups and says why in `note`. `extrapolated` marks a D_eff
    outside the baseline's fitted multiples (`extrapolation_factor` says how far) and `fit_unphysical` a scale
    whose unconstrained fit had a negative asymptote (or alpha, B <= 0): such speedups are not measurements."""
    from workers.optimizers import REGISTRY

    data = _load_data(db, sweep_id)
    trials = data.trials
    valid = sorted(set(REGISTRY) | {str(o) for o in trials["optimizer"]})
    if baseline not in valid:
        raise unknown_name("baseline", baseline, valid)
    sp = speedup_table(trials, baseline, N_BOOT_API, data.noise)
    rows = [
        SpeedupRow(
            scale=str(r["scale"]),
            optimizer=str(r["optimizer"]),
            chinchilla=float(r["chinchilla"]),
            non_embedding_params=_int(r["non_embedding_params"]),
            loss=_float(r["loss"]),
            loss_vs_baseline=_float(r["loss_vs_baseline"]),
            n_seeds=int(r["n_seeds"]),
            d_eff=_float(r["d_eff"]),
            speedup=_float(r["speedup"]),
            speedup_ci_low=_float(r["speedup_ci_low"]),
            speedup_ci_high=_float(r["speedup_ci_high"]),
            loss_ci_low=_float(r["loss_ci_low"]),
            loss_ci_high=_float(r["loss_ci_high"]),
            interval_source=str(r["interval_source"]),
            tied_within_noise=bool(r["tied_within_noise"]),
            tied_with=[str(o) for o in r["tied_with"]],
            beyond_asymptote=bool(r["beyond_asymptote"]),
            fit_alpha=_float(r["fit_alpha"]),
            fit_B=_float(r["fit_B"]),
            fit_beta=_float(r["fit_beta"]),
            fit_n_points=int(r["fit_n_points"]),
            fit_underdetermined=bool(r["fit_underdetermined"]),
            fit_unphysical=bool(r["fit_unphysical"]),
            fit_d_min=_float(r["fit_d_min"]),
            fit_d_max=_float(r["fit_d_max"]),
            extrapolated=bool(r["extrapolated"]),
            extrapolation_factor=_float(r["extrapolation_factor"]),
            note=str(r["note"]),
        )
        for r in sp.to_dict("records")
    ]
    return SpeedupsResponse(
        sweep_id=sweep_id,
        baseline=baseline,
        fit_multiples=None,  # every multiple the baseline ran at each scale (PAPER.md section 5)
        rows=rows,
    )


@router.get("/sweeps/{sweep_id}/flips", response_model=FlipsResponse, responses=NOT_FOUND)
def get_flips(sweep_id: IdPath, db: DatabaseDep) -> FlipsResponse:
    """Ranking flips (the paper's third finding): for each pair of optimizers at one scale and multiple, from
    the eval curves of each cell's best trial, the fraction of training after which their ranking no longer
    changes, and how often it changed before."""
    try:
        data = load_sweep(db, sweep_id, with_curves=True)
    except SweepNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    flips = ranking.ranking_flips(data.curves)
    rows = [
        FlipRow(
            scale=str(r["scale"]),
            chinchilla=float(r["chinchilla"]),
            optimizer_a=str(r["optimizer_a"]),
            optimizer_b=str(r["optimizer_b"]),
            final_leader=str(r["final_leader"]),
            settled_at=_float(r["settled_at"]),
            n_flips=int(r["n_flips"]),
            n_points=int(r["n_points"]),
            final_gap=_float(r["final_gap"]),
            note=str(r["note"]),
        )
        for r in flips.to_dict("records")
    ]
    note = "" if rows else "no two optimizers with best-trial eval curves at one scale and multiple"
    return FlipsResponse(sweep_id=sweep_id, rows=rows, note=note)


@router.get("/sweeps/{sweep_id}/sensitivity", response_model=SensitivityResponse, responses=NOT_FOUND)
def get_sensitivity(sweep_id: IdPath, db: DatabaseDep) -> SensitivityResponse:
    """Per cell, the loss of every finished config that differs from the cell's best in exactly one
    hyperparameter: the paper's sensitivity tables (PAPER.md section 4, Phase I step 5; section 6)."""
    sens = analysis.sensitivity(_load(db, sweep_id))
    rows = [
        SensitivityRow(
            optimizer=str(r["optimizer"]),
            scale=str(r["scale"]),
            chinchilla=float(r["chinchilla"]),
            hparam=str(r["hparam"]),
            value=_hvalue(r["value"]),
            best_value=_hvalue(r["best_value"]),
            loss=_float(r["loss"]),
            best_loss=float(r["best_loss"]),
            delta=_float(r["delta"]),
            diverged=bool(r["diverged"]),
            n_seeds=int(r["n_seeds"]),
        )
        for r in sens.to_dict("records")
    ]
    return SensitivityResponse(sweep_id=sweep_id, rows=rows)


# ---- /predict ---------------------------------------------------------------------------------------------


def _catalog() -> dict[str, tuple[str, int]]:
    """scale -> (family, N) from workers.model.SCALES."""
    from workers.model import SCALES, non_embedding_params

    return {name: (cfg.family, non_embedding_params(cfg)) for name, cfg in SCALES.items()}


def _nearest_family(n_params: float, catalog: dict[str, tuple[str, int]]) -> str:
    """The family of the catalog scale nearest to N in log space (a scale the catalog lacks, or a target size)."""
    return min(catalog.values(), key=lambda fn: (abs(math.log(fn[1]) - math.log(n_params)), fn[0]))[0]


def _family(scale: str, n_params: float, catalog: dict[str, tuple[str, int]]) -> str | None:
    if scale in catalog:
        return catalog[scale][0]
    return _nearest_family(n_params, catalog) if math.isfinite(n_params) and n_params > 0 else None


def _prediction(
    fit: analysis.ScalingFit, n_params: float, chinchilla: float, grid: list[Any] | None
) -> analysis.HparamPrediction | None:
    """One hyperparameter at (N, C), None where the fit's value overflows."""
    try:
        return analysis.predict_hparam(fit, n_params, chinchilla, grid)
    except (OverflowError, ValueError, ZeroDivisionError):
        return None


def _whole_number(value: object) -> object:
    """A query value written as a float (1e9, 1.2e9) as the whole number it is; anything else that is not an
    integer is refused here, so the 422 names `params` and says what it takes."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number.is_integer()):
        raise ValueError(f"params must be a whole number of parameters (e.g. 1207959552 or 1.2e9), got {text[:40]!r}")
    return int(number)


def _trainer_names(optimizer: str, family: str) -> set[str]:
    """The hyperparameter names the trainer takes for `optimizer` in `family`: those `resolve_hparams` accepts
    as overrides (the check `sweep-service train --set` and workers/trainer.py run)."""
    from workers.optimizers import get_spec, resolve_hparams

    return set(resolve_hparams(get_spec(optimizer), family))


@router.get(
    "/predict",
    response_model=PredictResponse,
    responses={
        404: {"description": "no finished work of this optimizer (of this model family) to fit"},
        409: {"description": "too little data: the finished cells do not span two model sizes"},
        422: {"description": "unknown optimizer (the message lists the valid ones) or a bad number"},
    },
)
def predict(
    db: DatabaseDep,
    optimizer: Annotated[str, Query(min_length=1, max_length=64, pattern=NAME, description="registry name")],
    params: Annotated[
        int,
        Query(ge=1, le=MAX_PARAMS, description="non-embedding parameter count N (a whole number; 1.2e9 is taken)"),
        BeforeValidator(_whole_number),
    ],
    chinchilla: Annotated[
        float, Query(gt=0, le=MAX_CHINCHILLA, allow_inf_nan=False, description="data multiple C")
    ] = 1.0,
    snap: Annotated[bool, Query(description="snap each value to the optimizer's grid for the family")] = False,
    family: Annotated[
        Literal["paper", "tiny"] | None,
        Query(description="model family to fit (default: that of the catalog scale nearest to params)"),
    ] = None,
    method: Annotated[
        Literal["robust", "paper"],
        Query(description="robust (default: never outside [min/2, 2 x max] of the cells) or paper (the authors' fit)"),
    ] = "robust",
) -> PredictResponse:
    """Predicted hyperparameters of `optimizer` for a model of `params` non-embedding parameters trained at
    `chinchilla` x 20 x N tokens (PAPER.md section 4, Phase III), from the best configs of every finished cell of
    the optimizer, in every sweep (imported ones too), of one model family. `method=paper` is the authors'
    procedure (the 12 cells of the three smallest sizes x 1-8x, a raw power law over the 10 middle ones, the last
    held out; unrounded). `method=robust` (default) ranks constant, nearest-cell, log-linear and bounded power
    law forms by leave-one-cell-out error, gives each value an interval from those residuals, and replaces a
    value outside [min/2, 2 x max] of the cells by the nearest cell's (`fallbacks`). Only names the trainer
    takes for the optimizer are predicted: the others (imported results carry e.g. lr_schedule or nesterov) are
    listed in `dropped`."""
    from workers.optimizers import REGISTRY

    if optimizer not in REGISTRY:
        raise unknown_name("optimizer", optimizer, list(REGISTRY))
    catalog = _catalog()
    target_family = family or _nearest_family(float(params), catalog)
    with db.session() as s:
        trials = results.finished_trials(s, scale_params(), optimizer)
    if trials.empty:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"no finished trials of {optimizer!r} in any sweep: run a sweep, or import results "
            "(`sweep-service import-results paper`)",
        )
    best = analysis.best_per_cell(trials, n_boot=0)
    best["family"] = [
        _family(str(sc), float(n), catalog) for sc, n in zip(best["scale"], best["non_embedding_params"], strict=True)
    ]
    usable = best[
        (best["family"] == target_family)
        & best["best_config"].map(lambda c: isinstance(c, dict))
        & best["non_embedding_params"].map(lambda n: math.isfinite(n) and n > 0)
    ]
    if usable.empty:
        have = sorted({str(f) for f in best["family"] if f is not None})
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"no finished {target_family}-family cell of {optimizer!r} with a finite best loss and a known "
            f"parameter count (families with results: {', '.join(have) or 'none'}; pass family=)",
        )
    sizes = {str(sc): int(n) for sc, n in zip(usable["scale"], usable["non_embedding_params"], strict=True)}
    if len(set(sizes.values())) < 2:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"{optimizer!r} has finished {target_family}-family cells at one model size only "
            f"({', '.join(sizes)}): a scaling law in N needs at least two sizes",
        )
    # Imported results carry names our trainer does not take (the paper's Muon and Scion configs hold
    # lr_schedule, its Adam-family ones nesterov): a config with them would be rejected by resolve_hparams.
    known = _trainer_names(optimizer, target_family)
    present = list(dict.fromkeys(k for c in usable["best_config"] for k in c))
    dropped = sorted(n for n in present if n not in known)
    try:
        fits = analysis.fit_hparam_scaling(
            usable, optimizer=optimizer, hparams=[n for n in present if n in known], method=method
        )
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"cannot fit {optimizer!r}: {exc}") from None

    notes: list[str] = []
    grid: dict[str, Any] | None = None
    if snap:
        space = REGISTRY[optimizer].spaces.get(target_family)
        if space is None:
            notes.append(f"{optimizer} has no {target_family} grid: values are not snapped")
        else:
            grid = {k: list(v) for k, v in space.grid.items()}
    if dropped:
        notes.append(f"not predicted, the trainer does not take them for {optimizer}: {', '.join(dropped)}")
    if method == "paper" and not snap:
        notes.append("method=paper values are unrounded, as the authors' fit gives them: pass snap=true to train")
    out: list[HparamFitOut] = []
    config: dict[str, bool | int | float | str | None] = {}
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
            HparamFitOut(
                name=name,
                method=method,
                form=pred.form if pred is not None else fit.form,
                params=[float(v) for v in fit.params],
                error=_float(fit.error),
                form_errors={k: _float(v) for k, v in fit.form_errors.items()},
                n_points=fit.n_points,
                holdout=HeldOutCell(scale=fit.holdout[0], chinchilla=fit.holdout[1]) if fit.holdout else None,
                holdout_actual=_hvalue(fit.holdout_actual),
                holdout_predicted=_hvalue(fit.holdout_predicted),
                raw=_hvalue(pred.raw) if pred is not None else None,
                predicted=predicted,
                low=_float(pred.low) if pred is not None else None,
                high=_float(pred.high) if pred is not None else None,
                fallback=bool(pred is not None and pred.fallback),
                note="; ".join(fit_notes),
            )
        )
    if fallbacks:
        notes.append(f"outside [min/2, 2 x max] of the cells, the nearest cell's value instead: {', '.join(fallbacks)}")
    if any(v is None for v in config.values()):
        notes.append("some predictions are not finite numbers at this size (null)")
    sweeps = sorted({int(i) for i in trials[trials["scale"].isin(list(sizes))]["sweep_id"]})
    return PredictResponse(
        optimizer=optimizer,
        non_embedding_params=params,
        chinchilla=chinchilla,
        family=target_family,
        snap=snap,
        config=config,
        fits=out,
        cells_used=len(usable),
        scales_used=sizes,
        sweeps_used=sweeps,
        note="; ".join(notes),
        dropped=dropped,
        fallbacks=fallbacks,
        method=method,
    )
