"""Converters from database rows to API models (one place, STYLE.md rule 1), and the progress of a sweep.

Everything here takes an open Session and returns pydantic models; the SQL is in db.repository and db.queries.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

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
    TrialSummary,
    TrialTimings,
)
from db import queries
from db.models import Cell, CurvePoint, Sweep, Trial
from sweep_service import noise
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


def _sweep_fields(sweep: Sweep, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "id": sweep.id,
        "name": sweep.name,
        "status": sweep.status,
        "imported": sweep.imported,
        "error": sweep.error,
        "created_at": sweep.created_at.replace(tzinfo=UTC),
        "started_at": utc(sweep.started_at),
        "finished_at": utc(sweep.finished_at),
        "trials": trial_counts(counts),
    }


def sweep_summary(sweep: Sweep, counts: dict[str, int]) -> SweepSummary:
    return SweepSummary(**_sweep_fields(sweep, counts))


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
        noise=CellNoise(**noise.summary(cell.settings if isinstance(cell.settings, dict) else None)),
    )


def eta(mean_finished_seconds: float | None, counts: dict[str, int], max_concurrent: int) -> float | None:
    """Mean finished-trial duration x remaining (pending + running) / max_concurrent; None before any finish."""
    if mean_finished_seconds is None:
        return None
    remaining = counts.get("pending", 0) + counts.get("running", 0)
    return max(0.0, mean_finished_seconds) * remaining / max_concurrent


# A finished sweep's trial statistics, per engine and sweep id, with the state they were computed in. The statistics
# read every trial of the sweep (milliseconds for 10k trials); once the sweep has finished and none of its trials
# is pending or running they cannot change: a finished trial's row is final (db.repository changes only pending and
# running trials), trials are added only while the sweep runs, and a sweep that runs again changes its status.
# The sweep's newest trial id is checked too, to be safe. 4096 sweeps: a few MB at most.
FINISHED_SWEEP_STATUSES = frozenset({"completed", "failed", "cancelled"})
OPEN_TRIAL_STATUSES = ("pending", "running")
STATS_CACHE_SWEEPS = 4096
_StatsKey = tuple[str, datetime | None, int | None]
_stats_caches: weakref.WeakKeyDictionary[Any, OrderedDict[int, tuple[_StatsKey, queries.SweepTrialStats]]] = (
    weakref.WeakKeyDictionary()
)
_stats_lock = threading.Lock()


def sweep_trial_stats(s: Session, sweep: Sweep) -> queries.SweepTrialStats:
    """db.queries.sweep_trial_stats, remembered for a finished sweep (see FINISHED_SWEEP_STATUSES)."""
    if sweep.status not in FINISHED_SWEEP_STATUSES:
        return queries.sweep_trial_stats(s, sweep.id)
    key: _StatsKey = (sweep.status, sweep.finished_at, queries.last_trial_id(s, sweep.id))
    engine = s.get_bind()
    with _stats_lock:
        cache = _stats_caches.setdefault(engine, OrderedDict())
        held = cache.get(sweep.id)
        if held is not None and held[0] == key:
            cache.move_to_end(sweep.id)
            return held[1]
    stats = queries.sweep_trial_stats(s, sweep.id)
    if not any(stats.by_status.get(status) for status in OPEN_TRIAL_STATUSES):
        with _stats_lock:
            cache[sweep.id] = (key, stats)
            cache.move_to_end(sweep.id)
            while len(cache) > STATS_CACHE_SWEEPS:
                cache.popitem(last=False)
    return stats


def _progress_fields(s: Session, sweep: Sweep) -> dict[str, Any]:
    """SweepProgress's fields, from two queries beyond the sweep's own whatever the sweep's size: its trials'
    statistics (sweep_trial_stats) and its cells."""
    stats = sweep_trial_stats(s, sweep)
    cells = [cell_progress(c, stats.by_cell.get(c.id, {})) for c in queries.progress_cells(s, sweep.id)]
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
    return {
        **_sweep_fields(sweep, stats.by_status),
        "cells": cells,
        "best": best,
        "device_hours": stats.device_seconds / SECONDS_PER_HOUR,
        "max_concurrent": max_concurrent,
        "eta_seconds": eta(stats.mean_finished_seconds, stats.by_status, max_concurrent),
    }


def sweep_progress(s: Session, sweep: Sweep) -> SweepProgress:
    return SweepProgress(**_progress_fields(s, sweep))


def sweep_detail(s: Session, sweep: Sweep) -> SweepDetail:
    # Built from the fields directly: a SweepProgress dumped and validated again would convert every cell twice.
    return SweepDetail(
        **_progress_fields(s, sweep),
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


def trial_summary(row: queries.TrialRow) -> TrialSummary:
    return TrialSummary(
        id=row.id,
        sweep_id=row.sweep_id,
        cell=row.cell,
        optimizer=row.optimizer,
        scale=row.scale,
        chinchilla=row.chinchilla,
        seed=row.seed,
        round=row.round,
        status=row.status,
        final_loss=finite(row.final_loss),
        reason=row.reason,
        config=row.config,
        steps=row.steps,
        total_steps=row.total_steps,
        device_seconds=finite(row.device_seconds),
        started_at=utc(row.started_at),
        finished_at=utc(row.finished_at),
    )


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
