"""Converters from the use cases' dataclasses (sweep_service.service) to the API's pydantic models: one place
(STYLE.md rule 1). What JSON cannot carry is settled here: a loss that is not finite (a diverged run) is sent as
null, the trial's `status` says why.
"""

from __future__ import annotations

import math
from typing import Any

from api.schemas import (
    BestSoFar,
    CellNoise,
    CellProgress,
    CurvePointOut,
    SweepDetail,
    SweepProgress,
    SweepSummary,
    TrialCounts,
    TrialDetail,
    TrialMetrics,
    TrialSummary,
    TrialTimings,
)
from sweep_service.service import sweeps, trials


def finite(value: float | None) -> float | None:
    """A float JSON can carry: non-finite values (a diverged loss) become None."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def finite_json(value: Any) -> Any:
    """`value` with every non-finite float inside it (a fit's raw prediction that overflowed) as None."""
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def trial_counts(counts: sweeps.TrialCounts) -> TrialCounts:
    return TrialCounts(
        pending=counts.pending,
        running=counts.running,
        completed=counts.completed,
        diverged=counts.diverged,
        failed=counts.failed,
        cancelled=counts.cancelled,
        total=counts.total,
    )


def _sweep_fields(sweep: sweeps.SweepSummary) -> dict[str, Any]:
    return {
        "id": sweep.id,
        "name": sweep.name,
        "status": sweep.status,
        "imported": sweep.imported,
        "error": sweep.error,
        "created_at": sweep.created_at,
        "started_at": sweep.started_at,
        "finished_at": sweep.finished_at,
        "trials": trial_counts(sweep.trials),
    }


def sweep_summary(sweep: sweeps.SweepSummary) -> SweepSummary:
    return SweepSummary(**_sweep_fields(sweep))


def cell_progress(cell: sweeps.CellProgress) -> CellProgress:
    n = cell.noise
    return CellProgress(
        id=cell.id,
        key=cell.key,
        optimizer=cell.optimizer,
        scale=cell.scale,
        chinchilla=cell.chinchilla,
        strategy=cell.strategy,
        status=cell.status,
        round=cell.round,
        trials=trial_counts(cell.trials),
        best_loss=finite(cell.best_loss),
        best_config=cell.best_config,
        best_trial_id=cell.best_trial_id,
        near_ties=cell.near_ties,
        noise=CellNoise(
            seeds=n.seeds,
            best_mean=n.best_mean,
            best_std=n.best_std,
            noise_std=n.noise_std,
            tolerance=n.tolerance,
            tolerance_auto=n.tolerance_auto,
        ),
        phase=cell.phase,
        decision=finite_json(cell.decision),
    )


def best_so_far(best: sweeps.BestSoFar | None) -> BestSoFar | None:
    if best is None:
        return None
    return BestSoFar(
        cell=best.cell,
        optimizer=best.optimizer,
        scale=best.scale,
        chinchilla=best.chinchilla,
        loss=best.loss,
        config=best.config,
        trial_id=best.trial_id,
    )


def _progress_fields(progress: sweeps.SweepProgress) -> dict[str, Any]:
    return {
        **_sweep_fields(progress.summary),
        "cells": [cell_progress(c) for c in progress.cells],
        "best": best_so_far(progress.best),
        "device_hours": progress.device_hours,
        "max_concurrent": progress.max_concurrent,
        "eta_seconds": progress.eta_seconds,
    }


def sweep_progress(progress: sweeps.SweepProgress) -> SweepProgress:
    return SweepProgress(**_progress_fields(progress))


def sweep_detail(detail: sweeps.SweepDetail) -> SweepDetail:
    # Built from the fields directly: a SweepProgress dumped and validated again would convert every cell twice.
    return SweepDetail(**_progress_fields(detail.progress), spec=detail.spec, claimed_by=detail.claimed_by)


def _summary_fields(trial: trials.TrialSummary) -> dict[str, Any]:
    return {
        "id": trial.id,
        "sweep_id": trial.sweep_id,
        "cell": trial.cell,
        "optimizer": trial.optimizer,
        "scale": trial.scale,
        "chinchilla": trial.chinchilla,
        "seed": trial.seed,
        "round": trial.round,
        "status": trial.status,
        "final_loss": finite(trial.final_loss),
        "reason": trial.reason,
        "config": trial.config,
        "steps": trial.steps,
        "total_steps": trial.total_steps,
        "device_seconds": finite(trial.device_seconds),
        "started_at": trial.started_at,
        "finished_at": trial.finished_at,
    }


def trial_summary(trial: trials.TrialSummary) -> TrialSummary:
    return TrialSummary(**_summary_fields(trial))


def trial_detail(trial: trials.TrialDetail) -> TrialDetail:
    summary = trial.summary
    return TrialDetail(
        **_summary_fields(summary),
        initial_loss=finite(trial.initial_loss),
        attempts=trial.attempts,
        tokens=trial.tokens,
        worker=trial.worker,
        optuna_trial=trial.optuna_trial,
        repro=trial.repro,
        timings=TrialTimings(
            created_at=trial.created_at,
            started_at=summary.started_at,
            finished_at=summary.finished_at,
            duration_seconds=trial.duration_seconds,
            device_seconds=finite(summary.device_seconds),
            tokens_per_second=finite(trial.tokens_per_second),
        ),
    )


def curve_point(point: trials.CurvePoint) -> CurvePointOut:
    return CurvePointOut(step=point.step, eval_loss=finite(point.eval_loss), train_loss=finite(point.train_loss))


def trial_metrics(curve: trials.TrialCurve) -> TrialMetrics:
    return TrialMetrics(trial_id=curve.trial_id, status=curve.status, points=[curve_point(p) for p in curve.points])
