"""Analysis of finished work: a sweep's speedups over AdamW, ranking flips and sensitivity tables, and predicted
configs for an unseen model size. The use cases are sweep_service/service/analysis.py's; these routes parse the
query, call one and render it.

Numbers that are not finite (an infinite speedup, a diverged loss, a failed fit's parameters) are sent as null:
JSON has no infinity, and the row's flags and note say why.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query
from pydantic import BeforeValidator

from api.deps import MAX_ID, DatabaseDep, Guarded, IdPath, unknown_name
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
from sweep_service.service import analysis as uc

router = APIRouter(tags=["analysis"], dependencies=Guarded)

MAX_PARAMS = uc.MAX_PARAMS
MAX_CHINCHILLA = uc.MAX_CHINCHILLA
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


@contextmanager
def _query_names() -> Iterator[None]:
    """An unknown name as the 422 every query parameter gets (api.deps.unknown_name: `loc` names the parameter)."""
    try:
        yield
    except uc.UnknownName as exc:
        raise unknown_name(exc.field, exc.name, list(exc.valid)) from None


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
    with _query_names():
        # The use case's bootstrap (analysis.N_BOOT seeded draws), as `sweep-service run`'s answer and the report:
        # one interval per cell on every surface (200 draws moved the ends by up to ~4%, enough to change a "tied
        # within noise" verdict). 0.14 s for the demo's sweep on the 2-core dev machine.
        result = uc.speedups(db, sweep_id, baseline)
    rows = [
        SpeedupRow(
            scale=r.scale,
            optimizer=r.optimizer,
            chinchilla=r.chinchilla,
            non_embedding_params=_int(r.non_embedding_params),
            loss=_float(r.loss),
            loss_vs_baseline=_float(r.loss_vs_baseline),
            n_seeds=r.n_seeds,
            d_eff=_float(r.d_eff),
            speedup=_float(r.speedup),
            speedup_ci_low=_float(r.speedup_ci_low),
            speedup_ci_high=_float(r.speedup_ci_high),
            loss_ci_low=_float(r.loss_ci_low),
            loss_ci_high=_float(r.loss_ci_high),
            interval_source=r.interval_source,
            tied_within_noise=r.tied_within_noise,
            tied_with=list(r.tied_with),
            beyond_asymptote=r.beyond_asymptote,
            fit_alpha=_float(r.fit_alpha),
            fit_B=_float(r.fit_B),
            fit_beta=_float(r.fit_beta),
            fit_n_points=r.fit_n_points,
            fit_underdetermined=r.fit_underdetermined,
            fit_unphysical=r.fit_unphysical,
            fit_d_min=_float(r.fit_d_min),
            fit_d_max=_float(r.fit_d_max),
            extrapolated=r.extrapolated,
            extrapolation_factor=_float(r.extrapolation_factor),
            note=r.note,
        )
        for r in result.rows
    ]
    return SpeedupsResponse(
        sweep_id=result.sweep_id,
        baseline=result.baseline,
        fit_multiples=None,  # every multiple the baseline ran at each scale (PAPER.md section 5)
        rows=rows,
    )


@router.get("/sweeps/{sweep_id}/flips", response_model=FlipsResponse, responses=NOT_FOUND)
def get_flips(sweep_id: IdPath, db: DatabaseDep) -> FlipsResponse:
    """Ranking flips (the paper's third finding): for each pair of optimizers at one scale and multiple, from
    the eval curves of each cell's best trial, the fraction of training after which their ranking no longer
    changes, and how often it changed before."""
    result = uc.flips(db, sweep_id)
    rows = [
        FlipRow(
            scale=r.scale,
            chinchilla=r.chinchilla,
            optimizer_a=r.optimizer_a,
            optimizer_b=r.optimizer_b,
            final_leader=r.final_leader,
            settled_at=_float(r.settled_at),
            n_flips=r.n_flips,
            n_points=r.n_points,
            final_gap=_float(r.final_gap),
            note=r.note,
        )
        for r in result.rows
    ]
    return FlipsResponse(sweep_id=result.sweep_id, rows=rows, note=result.note)


@router.get("/sweeps/{sweep_id}/sensitivity", response_model=SensitivityResponse, responses=NOT_FOUND)
def get_sensitivity(sweep_id: IdPath, db: DatabaseDep) -> SensitivityResponse:
    """Per cell, the loss of every finished config that differs from the cell's best in exactly one
    hyperparameter: the paper's sensitivity tables (PAPER.md section 4, Phase I step 5; section 6)."""
    result = uc.sensitivity(db, sweep_id)
    rows = [
        SensitivityRow(
            optimizer=r.optimizer,
            scale=r.scale,
            chinchilla=r.chinchilla,
            hparam=r.hparam,
            value=r.value,
            best_value=r.best_value,
            loss=_float(r.loss),
            best_loss=r.best_loss,
            delta=_float(r.delta),
            diverged=r.diverged,
            n_seeds=r.n_seeds,
        )
        for r in result.rows
    ]
    return SensitivityResponse(sweep_id=result.sweep_id, rows=rows)


# ---- /predict ---------------------------------------------------------------------------------------------


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


def _fit_out(fit: uc.HparamFit) -> HparamFitOut:
    return HparamFitOut(
        name=fit.name,
        method=fit.method,
        form=fit.form,
        params=list(fit.params),
        error=_float(fit.error),
        form_errors={k: _float(v) for k, v in fit.form_errors.items()},
        n_points=fit.n_points,
        holdout=HeldOutCell(scale=fit.holdout[0], chinchilla=fit.holdout[1]) if fit.holdout else None,
        holdout_actual=fit.holdout_actual,
        holdout_predicted=fit.holdout_predicted,
        raw=fit.raw,
        predicted=fit.predicted,
        low=_float(fit.low),
        high=_float(fit.high),
        fallback=fit.fallback,
        note=fit.note,
    )


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
        uc.Method,
        Query(description="robust (default: never outside [min/2, 2 x max] of the cells) or paper (the authors' fit)"),
    ] = "robust",
    sweep: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_ID,
            description="fit only this sweep's cells (every family unless `family` is given): e.g. an external "
            "sweep's own model at its custom scales, which would otherwise join the catalog family nearest in size",
        ),
    ] = None,
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
    with _query_names():
        result = uc.predict(db, optimizer, params, chinchilla, snap=snap, family=family, method=method, sweep_id=sweep)
    return PredictResponse(
        optimizer=result.optimizer,
        non_embedding_params=result.non_embedding_params,
        chinchilla=result.chinchilla,
        family=result.family,
        snap=result.snap,
        config=dict(result.config),
        fits=[_fit_out(fit) for fit in result.fits],
        cells_used=result.cells_used,
        scales_used=dict(result.scales_used),
        sweeps_used=list(result.sweeps_used),
        note=result.note,
        dropped=list(result.dropped),
        fallbacks=list(result.fallbacks),
        method=result.method,
    )
