"""Use cases on trials: a sweep's trials (filtered, a page at a time), one trial with its reproducibility record,
and its loss curve. Functions over a `Database` that return plain frozen dataclasses or raise NotFound; the REST
routers (api/routers/trials.py) only parse, call and render.

Values are as stored: a diverged trial's losses may be infinite or NaN (the API sends them as null); times are
UTC with their time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from db import queries
from db import repository as repo
from db.models import TRIAL_STATUSES
from db.records import CellRecord, TrialRecord
from db.session import Database
from sweep_service.service.errors import NotFound
from sweep_service.service.sweeps import utc

STATUSES = TRIAL_STATUSES  # pending, running, completed, diverged, failed, cancelled


# Which of a sweep's trials a page holds (None matches anything): the query's own filter, a plain dataclass.
TrialFilter = queries.TrialFilter


@dataclass(frozen=True)
class TrialSummary:
    id: int
    sweep_id: int
    cell: str  # the cell's key
    optimizer: str
    scale: str
    chinchilla: float
    seed: int
    round: int
    status: str
    final_loss: float | None  # None unless completed
    reason: str | None  # why it diverged, failed or was cancelled
    config: dict[str, Any]
    steps: int | None
    total_steps: int | None
    device_seconds: float | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class TrialPage:
    items: list[TrialSummary]
    total: int  # trials that match, over every page


@dataclass(frozen=True)
class TrialDetail:
    summary: TrialSummary
    initial_loss: float | None
    attempts: int
    tokens: int | None
    worker: str | None
    optuna_trial: int | None  # the trial's number in its cell's Optuna study
    repro: dict[str, Any] | None  # code and library versions, device, corpus hash, token budget
    created_at: datetime
    duration_seconds: float | None  # finished_at - started_at
    tokens_per_second: float | None


@dataclass(frozen=True)
class CurvePoint:
    step: int
    eval_loss: float | None
    train_loss: float | None


@dataclass(frozen=True)
class TrialCurve:
    trial_id: int
    status: str
    points: list[CurvePoint]  # in step order


def list_trials(
    db: Database, sweep_id: int, where: TrialFilter | None = None, limit: int = 50, offset: int = 0
) -> TrialPage:
    """A page of a sweep's trials, oldest first, and how many match `where`. NotFound when there is no sweep."""
    with db.session() as s:
        rows, total = queries.list_trials(s, sweep_id, where or TrialFilter(), limit=limit, offset=offset)
        # A sweep with matching trials exists; only an empty answer needs to tell "no sweep" from "no match".
        if total == 0 and not queries.sweep_exists(s, sweep_id):
            raise NotFound(f"no sweep {sweep_id}")
    return TrialPage([_row(row) for row in rows], total)


def get(db: Database, trial_id: int) -> TrialDetail:
    """One trial: config, status and reason, reproducibility record, timings."""
    with db.session() as s:
        trial = _trial(s, trial_id)
        cell = repo.get_cell(s, trial.cell_id)
        assert cell is not None  # a trial's cell_id is a foreign key
        return _detail(trial, cell)


def curve(db: Database, trial_id: int) -> TrialCurve:
    """The trial's loss curve: (step, eval loss, train loss) points in step order."""
    with db.session() as s:
        trial = _trial(s, trial_id)
        points = [CurvePoint(p.step, p.eval_loss, p.train_loss) for p in repo.curve(s, trial_id)]
        return TrialCurve(trial_id, trial.status, points)


def _trial(s: Session, trial_id: int) -> TrialRecord:
    trial = repo.get_trial(s, trial_id)
    if trial is None:
        raise NotFound(f"no trial {trial_id}")
    return trial


def _row(row: queries.TrialRow) -> TrialSummary:
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
        final_loss=row.final_loss,
        reason=row.reason,
        config=row.config,
        steps=row.steps,
        total_steps=row.total_steps,
        device_seconds=row.device_seconds,
        started_at=utc(row.started_at),
        finished_at=utc(row.finished_at),
    )


def _detail(trial: TrialRecord, cell: CellRecord) -> TrialDetail:
    duration = None
    if trial.started_at is not None and trial.finished_at is not None:
        duration = (trial.finished_at - trial.started_at).total_seconds()
    summary = TrialSummary(
        id=trial.id,
        sweep_id=trial.sweep_id,
        cell=cell.key,
        optimizer=cell.optimizer,
        scale=cell.scale,
        chinchilla=cell.chinchilla,
        seed=trial.seed,
        round=trial.round,
        status=trial.status,
        final_loss=trial.final_loss,
        reason=trial.reason,
        config=trial.config,
        steps=trial.steps,
        total_steps=trial.total_steps,
        device_seconds=trial.device_seconds,
        started_at=utc(trial.started_at),
        finished_at=utc(trial.finished_at),
    )
    return TrialDetail(
        summary=summary,
        initial_loss=trial.initial_loss,
        attempts=trial.attempts,
        tokens=trial.tokens,
        worker=trial.worker,
        optuna_trial=trial.optuna_trial,
        repro=trial.repro,
        created_at=trial.created_at.replace(tzinfo=UTC),
        duration_seconds=duration,
        tokens_per_second=trial.tokens_per_second,
    )
