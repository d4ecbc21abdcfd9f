"""Use cases on sweeps: submit one, list them, and one sweep's detail, progress and cells. Each is a function over
a `Database` that returns plain frozen dataclasses or raises sweep_service.service.errors; `POST /sweeps`,
`GET /sweeps`, `GET /sweeps/{id}`, its `events` stream and the CLI's `run` and `status` all call these, so the
API and the CLI cannot disagree (DESIGN.md, "Inside sweep_service/").

Values are as stored: a loss may be infinite (the API sends it as null, the CLI prints it), times are UTC with
their time zone. A sweep's progress costs two queries beyond the sweep's own whatever its size (its trials'
statistics from one covering index, and its cells); a finished sweep's statistics are remembered (see
FINISHED_SWEEP_STATUSES).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import queries
from db import repository as repo
from db.models import SWEEP_STATUSES, SWEEP_TERMINAL, TRIAL_STATUSES
from db.records import SweepRecord
from db.session import Database
from sweep_service import noise
from sweep_service.service.errors import Invalid, NotFound
from sweep_service.spec import SweepSpec

STATUSES = SWEEP_STATUSES  # queued, running, paused, completed, failed, cancelled
SECONDS_PER_HOUR = 3600.0
DEFAULT_MAX_CONCURRENT: int = SweepSpec.model_fields["max_concurrent"].default
IDEMPOTENCY_KEY_FIELD = "Idempotency-Key"  # the field an Invalid of a reused key names (the API's header)


def utc(value: datetime | None) -> datetime | None:
    """The database stores naive UTC (db.models.utcnow); the use cases say so."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


# ---- what the use cases return --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialCounts:
    """Trials by status (db.models.TRIAL_STATUSES) and their total."""

    pending: int = 0
    running: int = 0
    completed: int = 0
    diverged: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0

    @classmethod
    def of(cls, by_status: dict[str, int]) -> TrialCounts:
        known = {k: v for k, v in by_status.items() if k in TRIAL_STATUSES}
        return cls(**known, total=sum(by_status.values()))

    def present(self) -> dict[str, int]:
        """The statuses some trial has, with their counts."""
        return {k: n for k in TRIAL_STATUSES if (n := getattr(self, k))}


@dataclass(frozen=True)
class Submitted:
    id: int
    name: str
    status: str
    created: bool  # False: the sweep an earlier submission with the same idempotency key created


@dataclass(frozen=True)
class SweepSummary:
    id: int
    name: str
    status: str
    imported: bool
    error: str | None  # why it failed, or what it waits for
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    trials: TrialCounts
    cells: int | None  # how many cells it has; None unless asked for (list_sweeps count_cells)


@dataclass(frozen=True)
class SweepPage:
    items: list[SweepSummary]
    total: int  # sweeps that match, over every page


@dataclass(frozen=True)
class CellNoise:
    """Seed noise of a cell (sweep_service.noise.summary); None where not measured."""

    seeds: int | None
    best_mean: float | None
    best_std: float | None
    noise_std: float | None
    tolerance: float | None
    tolerance_auto: str | None


@dataclass(frozen=True)
class CellProgress:
    id: int
    key: str  # "optimizer/scale/chinchilla"
    optimizer: str
    scale: str
    chinchilla: float
    strategy: str
    status: str
    round: int
    trials: TrialCounts
    best_loss: float | None
    best_config: dict[str, Any] | None
    best_trial_id: int | None
    near_ties: list[Any]
    noise: CellNoise
    phase: int  # 1, 2 or 3 (PAPER.md section 4)
    decision: dict[str, Any] | None  # a Phase II/III cell's decision once made (decision_of), else None


@dataclass(frozen=True)
class BestSoFar:
    """The sweep's lowest finite cell best so far."""

    cell: str
    optimizer: str
    scale: str
    chinchilla: float
    loss: float
    config: dict[str, Any] | None
    trial_id: int | None


@dataclass(frozen=True)
class SweepProgress:
    """Status, per-cell progress, best so far, compute used and time left."""

    summary: SweepSummary
    cells: list[CellProgress]
    best: BestSoFar | None
    device_hours: float  # the sum of the trials' device seconds / 3600
    max_concurrent: int
    eta_seconds: float | None  # mean finished-trial duration x (pending + running) / max_concurrent


@dataclass(frozen=True)
class SweepDetail:
    progress: SweepProgress
    spec: dict[str, Any]  # as submitted (and updated)
    claimed_by: str | None  # the dispatcher running it


# ---- submit ---------------------------------------------------------------------------------------------------


def submit(
    db: Database,
    name: str,
    spec: dict[str, Any],
    idempotency_key: str | None = None,
    *,
    same_spec_only: bool = True,
) -> Submitted:
    """Queue a sweep with this (validated) spec for a dispatcher. With an idempotency key that an earlier
    submission used, nothing is written and that submission's sweep is the answer (created False), also when two
    submissions race (the unique key lets exactly one insert).

    `same_spec_only`: a known key with another spec is Invalid (the IETF draft "The Idempotency-Key HTTP Header
    Field": a key reused with another payload is an error), as the API wants. The CLI's keys are hashes of the spec
    file, so a difference there means the sweep was updated since (PATCH budget): it passes False and gets it."""
    if idempotency_key is not None:
        with db.session() as s:
            existing = repo.sweep_by_idempotency_key(s, idempotency_key)
            if existing is not None:
                return _replay(existing, spec, same_spec_only)
    try:
        with db.session() as s:
            sweep = repo.create_sweep(s, name, spec, idempotency_key=idempotency_key)
            return Submitted(sweep.id, sweep.name, sweep.status, created=True)
    except IntegrityError:
        if idempotency_key is None:
            raise
        with db.session() as s:
            existing = repo.sweep_by_idempotency_key(s, idempotency_key)
            if existing is None:
                raise
            return _replay(existing, spec, same_spec_only)


def _replay(existing: SweepRecord, spec: dict[str, Any], same_spec_only: bool) -> Submitted:
    if same_spec_only and existing.spec != spec:
        raise Invalid(IDEMPOTENCY_KEY_FIELD, f"this key was used for sweep {existing.id} with a different spec")
    return Submitted(existing.id, existing.name, existing.status, created=False)


# ---- status ---------------------------------------------------------------------------------------------------


def list_sweeps(
    db: Database, status: str | None = None, limit: int | None = 50, offset: int = 0, *, count_cells: bool = False
) -> SweepPage:
    """Sweeps, newest first, optionally of one status (`limit` None: every one), with their trial counts (and
    their cell counts with `count_cells`: one more grouped query, which the CLI's listing shows and the API's
    does not)."""
    with db.session() as s:
        total = queries.count_sweeps(s, status)
        sweeps = repo.list_sweeps(s, status=status, limit=total if limit is None else limit, offset=offset)
        ids = [sw.id for sw in sweeps]
        counts = queries.trial_counts_for_sweeps(s, ids)
        cells = queries.cell_counts_for_sweeps(s, ids) if count_cells else {}
        items = [_summary(sw, counts[sw.id], cells.get(sw.id)) for sw in sweeps]
    return SweepPage(items, total)


def get(db: Database, sweep_id: int) -> SweepDetail:
    """One sweep: its progress, its spec and who runs it."""
    with db.session() as s:
        sweep = _sweep(s, sweep_id)
        spec = sweep.spec if isinstance(sweep.spec, dict) else {}
        return SweepDetail(_progress(s, sweep), spec, sweep.claimed_by)


def progress(db: Database, sweep_id: int) -> SweepProgress:
    """One sweep's status, per-cell progress, best so far, compute used and time left (the `events` payload)."""
    with db.session() as s:
        return _progress(s, _sweep(s, sweep_id))


def cells(db: Database, sweep_id: int) -> list[CellProgress]:
    """One sweep's cells in id order with their trial counts, best and seed noise (`status ID`'s table)."""
    with db.session() as s:
        sweep = _sweep(s, sweep_id)
        return _cells(s, sweep.id, _trial_stats(s, sweep))


def _sweep(s: Session, sweep_id: int) -> SweepRecord:
    sweep = repo.get_sweep(s, sweep_id)
    if sweep is None:
        raise NotFound(f"no sweep {sweep_id}")
    return sweep


def _summary(sweep: SweepRecord, by_status: dict[str, int], cells: int | None = None) -> SweepSummary:
    return SweepSummary(
        id=sweep.id,
        name=sweep.name,
        status=sweep.status,
        imported=sweep.imported,
        error=sweep.error,
        created_at=sweep.created_at.replace(tzinfo=UTC),
        started_at=utc(sweep.started_at),
        finished_at=utc(sweep.finished_at),
        trials=TrialCounts.of(by_status),
        cells=cells,
    )


def max_concurrent_of(sweep: SweepRecord) -> int:
    value = sweep.spec.get("max_concurrent") if isinstance(sweep.spec, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return DEFAULT_MAX_CONCURRENT


def eta(mean_finished_seconds: float | None, by_status: dict[str, int], max_concurrent: int) -> float | None:
    """Mean finished-trial duration x remaining (pending + running) / max_concurrent; None before any finish."""
    if mean_finished_seconds is None:
        return None
    remaining = by_status.get("pending", 0) + by_status.get("running", 0)
    return max(0.0, mean_finished_seconds) * remaining / max_concurrent


def _cell(cell: queries.ProgressCell, by_status: dict[str, int]) -> CellProgress:
    settings = cell.settings if isinstance(cell.settings, dict) else None
    return CellProgress(
        id=cell.id,
        key=cell.key,
        optimizer=cell.optimizer,
        scale=cell.scale,
        chinchilla=cell.chinchilla,
        strategy=cell.strategy,
        status=cell.status,
        round=cell.round,
        trials=TrialCounts.of(by_status),
        best_loss=cell.best_loss,
        best_config=cell.best_config,
        best_trial_id=cell.best_trial_id,
        near_ties=list(cell.near_ties or []),
        noise=CellNoise(**noise.summary(settings)),
        phase=int(settings.get("phase", 1)) if settings else 1,
        decision=decision_of(settings),
    )


# What sweep_service.phases decides for a cell, kept in its settings by the engine: Phase II the hyperparameters it
# re-tunes (`unstable`), the `stable` ones with their common values and the `start` config; Phase III the
# `prediction`, its `method` and per hyperparameter `fits` (form, points, held-out error, raw value, fallback).
PHASE_TWO_DECISION = ("unstable", "stable", "start")
PHASE_THREE_DECISION = ("prediction", "method", "fits")


def decision_of(settings: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Phase II or III cell's decision from its settings, None before it is made (or for a Phase I cell)."""
    if not settings:
        return None
    for keys in (PHASE_TWO_DECISION, PHASE_THREE_DECISION):
        if keys[0] in settings:
            return {k: settings[k] for k in keys if k in settings}
    return None


def _cells(s: Session, sweep_id: int, stats: queries.SweepTrialStats) -> list[CellProgress]:
    return [_cell(c, stats.by_cell.get(c.id, {})) for c in queries.progress_cells(s, sweep_id)]


def best_so_far(cells: list[CellProgress]) -> BestSoFar | None:
    """The cell with the lowest finite best loss (the lower id on a tie); None before any."""
    ranked = [c for c in cells if c.best_loss is not None and math.isfinite(c.best_loss)]
    if not ranked:
        return None
    top = min(ranked, key=lambda c: (c.best_loss, c.id))
    assert top.best_loss is not None
    return BestSoFar(
        cell=top.key,
        optimizer=top.optimizer,
        scale=top.scale,
        chinchilla=top.chinchilla,
        loss=top.best_loss,
        config=top.best_config,
        trial_id=top.best_trial_id,
    )


def _progress(s: Session, sweep: SweepRecord) -> SweepProgress:
    stats = _trial_stats(s, sweep)
    cell_rows = _cells(s, sweep.id, stats)
    max_concurrent = max_concurrent_of(sweep)
    return SweepProgress(
        summary=_summary(sweep, stats.by_status),
        cells=cell_rows,
        best=best_so_far(cell_rows),
        device_hours=stats.device_seconds / SECONDS_PER_HOUR,
        max_concurrent=max_concurrent,
        eta_seconds=eta(stats.mean_finished_seconds, stats.by_status, max_concurrent),
    )


# A finished sweep's trial statistics, per engine and sweep id, with the state they were computed in. The statistics
# read every trial of the sweep (milliseconds for 10k trials); once the sweep has finished and none of its trials
# is pending or running they cannot change: a finished trial's row is final (db.repository changes only pending and
# running trials), trials are added only while the sweep runs, and a sweep that runs again changes its status.
# The sweep's newest trial id is checked too, to be safe. 4096 sweeps: a few MB at most.
FINISHED_SWEEP_STATUSES = frozenset(SWEEP_TERMINAL)
OPEN_TRIAL_STATUSES = ("pending", "running")
STATS_CACHE_SWEEPS = 4096
_StatsKey = tuple[str, datetime | None, int | None]
_stats_caches: weakref.WeakKeyDictionary[Any, OrderedDict[int, tuple[_StatsKey, queries.SweepTrialStats]]] = (
    weakref.WeakKeyDictionary()
)
_stats_lock = threading.Lock()


def _trial_stats(s: Session, sweep: SweepRecord) -> queries.SweepTrialStats:
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
