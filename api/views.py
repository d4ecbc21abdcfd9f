"""Converters from database rows to API models (one place, STYLE.md rule 1), and the progress of a sweep.

Everything here takes an open Session and returns pydantic models; the SQL is in db.repository and db.queries.
"""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from api.schemas import (
    BestSoFar,
    CellProgress,
    CurvePointOut,
    SweepDetail,
    SweepProgress,
    SweepSummary,
    TrialCounts,
    TrialDetail,
    TrialSummary,
    TrialTimings,
)
from db import queries
from db import repository as repo
from db.models import Cell, CurvePoint, Sweep, Trial
from sweep_service.spec import SweepSpec

SECONDS_PER_HOUR = 3600.0
DEFAULT_MAX_CONCURRENT: int = SweepSpec.model_fields["max_concurrent"].default


def finite(value: float | None) -> float | None:
    """A float JSON can carry: non-finite values (a diverged loss) become None."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def utc(value: datetime | None) -> datetime | None:
    """The database stores naive UTC (db.models.utcnow); the API says so."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def trial_counts(by_status: dict[str, int]) -> TrialCounts:
    known = {k: v for k, v in by_status.items() if k in TrialCounts.model_fields and k != "total"}
    return TrialCounts(**known, total=sum(by_status.values()))


def max_concurrent_of(sweep: Sweep) -> int:
    value = sweep.spec.get("max_concurrent") if isinstance(sweep.spec, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return DEFAULT_MAX_CONCURRENT


def sweep_summary(sweep: Sweep, counts: dict[str, int]) -> SweepSummary:
    return SweepSummary(
        id=sweep.id,
        name=sweep.name,
        status=sweep.status,
        imported=sweep.imported,
        error=sweep.error,
        created_at=sweep.created_at.replace(tzinfo=UTC),
        started_at=utc(sweep.started_at),
        finished_at=utc(sweep.finished_at),
        trials=trial_counts(counts),
    )


def cell_progress(cell: Cell, counts: dict[str, int]) -> CellProgress:
    return CellProgress(
        id=cell.id,
        key=cell.key,
        optimizer=cell.optimizer,
        scale=cell.scale,
        chinchilla=cell.chinchilla,
        strategy=cell.strategy,
        status=cell.status,
        round=cell.round,
        trials=trial_counts(counts),
        best_loss=finite(cell.best_loss),
        best_config=cell.best_config,
        best_trial_id=cell.best_trial_id,
        near_ties=list(cell.near_ties or []),
    )


def eta_seconds(s: Session, sweep_id: int, counts: dict[str, int], max_concurrent: int) -> float | None:
    """Mean finished-trial duration x remaining (pending + running) / max_concurrent; None before any finish."""
    durations = [(end - start).total_seconds() for start, end in queries.finished_trial_times(s, sweep_id)]
    if not durations:
        return None
    remaining = counts.get("pending", 0) + counts.get("running", 0)
    return max(0.0, statistics.fmean(durations)) * remaining / max_concurrent


def sweep_progress(s: Session, sweep: Sweep) -> SweepProgress:
    counts = repo.count_trials_by_status(s, sweep.id)
    by_cell = queries.trial_counts_by_cell(s, sweep.id)
    cells = [cell_progress(c, by_cell.get(c.id, {})) for c in repo.cells_of(s, sweep.id)]
    ranked = [c for c in cells if c.best_loss is not None]
    best = None
    if ranked:
        top = min(ranked, key=lambda c: (c.best_loss if c.best_loss is not None else math.inf, c.id))
        assert top.best_loss is not None
        best = BestSoFar(
            cell=top.key,
            optimizer=top.optimizer,
            scale=top.scale,
            chinchilla=top.chinchilla,
            loss=top.best_loss,
            config=top.best_config,
            trial_id=top.best_trial_id,
        )
    max_concurrent = max_concurrent_of(sweep)
    summary = sweep_summary(sweep, counts)
    return SweepProgress(
        **summary.model_dump(),
        cells=cells,
        best=best,
        device_hours=queries.device_seconds_used(s, sweep.id) / SECONDS_PER_HOUR,
        max_concurrent=max_concurrent,
        eta_seconds=eta_seconds(s, sweep.id, counts, max_concurrent),
    )


def sweep_detail(s: Session, sweep: Sweep) -> SweepDetail:
    progress = sweep_progress(s, sweep)
    return SweepDetail(
        **progress.model_dump(),
        spec=sweep.spec if isinstance(sweep.spec, dict) else {},
        claimed_by=sweep.claimed_by,
    )


def _summary_fields(trial: Trial, cell: Cell) -> dict[str, Any]:
    return {
        "id": trial.id,
        "sweep_id": trial.sweep_id,
        "cell": cell.key,
        "optimizer": cell.optimizer,
        "scale": cell.scale,
        "chinchilla": cell.chinchilla,
        "seed": trial.seed,
        "round": trial.round,
        "status": trial.status,
        "final_loss": finite(trial.final_loss),
        "reason": trial.reason,
        "config": trial.config,
        "steps": trial.steps,
        "total_steps": trial.total_steps,
        "device_seconds": finite(trial.device_seconds),
        "started_at": utc(trial.started_at),
        "finished_at": utc(trial.finished_at),
    }


def trial_summary(trial: Trial, cell: Cell) -> TrialSummary:
    return TrialSummary(**_summary_fields(trial, cell))


def trial_detail(trial: Trial, cell: Cell) -> TrialDetail:
    duration = None
    if trial.started_at is not None and trial.finished_at is not None:
        duration = (trial.finished_at - trial.started_at).total_seconds()
    return TrialDetail(
        **_summary_fields(trial, cell),
        initial_loss=finite(trial.initial_loss),
        attempts=trial.attempts,
        tokens=trial.tokens,
        worker=trial.worker,
        optuna_trial=trial.optuna_trial,
        repro=trial.repro,
        timings=TrialTimings(
            created_at=trial.created_at.replace(tzinfo=UTC),
            started_at=utc(trial.started_at),
            finished_at=utc(trial.finished_at),
            duration_seconds=duration,
            device_seconds=finite(trial.device_seconds),
            tokens_per_second=finite(trial.tokens_per_second),
        ),
    )


def curve_point(point: CurvePoint) -> CurvePointOut:
    return CurvePointOut(step=point.step, eval_loss=finite(point.eval_loss), train_loss=finite(point.train_loss))
