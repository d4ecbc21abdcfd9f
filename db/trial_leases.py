"""The SQL of external trials (sweep_service.external): leases on trials, and stored suggestion answers.

A trial an outside worker takes is `running` with its name in `worker` and a `lease_expires_at`; heartbeats
extend the lease, and a trial whose lease ran out goes back to `pending` (its partial curve dropped, as a
restarted driver's are: db.repository.requeue_running) to be suggested again. Every change is a compare-and-set
on (status, worker), so a worker whose lease was handed to another cannot write over the new holder.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import TRIAL_TERMINAL, CurvePoint, SuggestionRequest, Trial, utcnow
from db.repository import _rowcount


def lease_until(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


def take(s: Session, trial_id: int, worker: str, lease_seconds: float) -> bool:
    """Lease a pending trial to `worker`; False when another caller took it first."""
    res = s.execute(
        update(Trial)
        .where(Trial.id == trial_id, Trial.status == "pending")
        .values(
            status="running",
            worker=worker,
            lease_expires_at=lease_until(lease_seconds),
            started_at=utcnow(),
            attempts=Trial.attempts + 1,
        ),
        execution_options={"synchronize_session": False},
    )
    return _rowcount(res) == 1


def extend(s: Session, trial_id: int, worker: str, lease_seconds: float) -> datetime | None:
    """Extend `worker`'s lease; None when the trial is no longer running under that worker."""
    until = lease_until(lease_seconds)
    res = s.execute(
        update(Trial)
        .where(Trial.id == trial_id, Trial.status == "running", Trial.worker == worker)
        .values(lease_expires_at=until),
        execution_options={"synchronize_session": False},
    )
    return until if _rowcount(res) == 1 else None


def holds(s: Session, trial_id: int, worker: str) -> bool:
    found = s.scalars(
        select(Trial.id).where(Trial.id == trial_id, Trial.status == "running", Trial.worker == worker)
    ).first()
    return found is not None


def finish(s: Session, trial_id: int, worker: str, to: str, **fields: Any) -> bool:
    """Record `worker`'s result; False when the trial is no longer running under that worker."""
    assert to in TRIAL_TERMINAL
    res = s.execute(
        update(Trial)
        .where(Trial.id == trial_id, Trial.status == "running", Trial.worker == worker)
        .values(status=to, finished_at=utcnow(), lease_expires_at=None, **fields),
        execution_options={"synchronize_session": False},
    )
    return _rowcount(res) == 1


def expire(s: Session, sweep_id: int) -> list[int]:
    """Trials whose lease ran out go back to pending; returns their ids. Ray's trials have no lease."""
    now = utcnow()
    expired = list(
        s.scalars(
            select(Trial.id).where(
                Trial.sweep_id == sweep_id,
                Trial.status == "running",
                Trial.lease_expires_at.is_not(None),
                Trial.lease_expires_at < now,
            )
        )
    )
    if not expired:
        return []
    s.execute(delete(CurvePoint).where(CurvePoint.trial_id.in_(expired)))
    s.execute(
        update(Trial)
        .where(Trial.id.in_(expired), Trial.status == "running", Trial.lease_expires_at < now)
        .values(status="pending", worker=None, lease_expires_at=None, started_at=None),
        execution_options={"synchronize_session": False},
    )
    return expired


def stored_answer(s: Session, sweep_id: int, key: str) -> dict[str, Any] | None:
    row = s.get(SuggestionRequest, (sweep_id, key))
    return dict(row.response) if row is not None else None


def store_answer(s: Session, sweep_id: int, key: str, response: dict[str, Any]) -> dict[str, Any]:
    """Keep the answer to a keyed request; when a concurrent request with the same key stored one first, that
    one is the answer (returned)."""
    try:
        with s.begin_nested():
            s.add(SuggestionRequest(sweep_id=sweep_id, key=key, response=response))
    except IntegrityError:
        existing = stored_answer(s, sweep_id, key)
        if existing is not None:
            return existing
        raise
    return response
