"""Read queries of the REST API (and one cancel helper). All SQL lives in db/ (DESIGN.md).

Functions take a Session and return ORM rows or plain values, like db.repository; they never commit. Grouped
counts are done in SQL so a page of results costs a fixed number of queries, not one per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from db.models import TRIAL_FINISHED, Cell, Sweep, Trial

# ---- sweeps -------------------------------------------------------------------------------------------


def count_sweeps(s: Session, status: str | None = None) -> int:
    q = select(func.count()).select_from(Sweep)
    if status:
        q = q.where(Sweep.status == status)
    return int(s.scalar(q) or 0)


def sweeps_by_status(s: Session) -> dict[str, int]:
    rows = s.execute(select(Sweep.status, func.count()).group_by(Sweep.status)).all()
    return {status: int(n) for status, n in rows}


def queue_depth(s: Session) -> int:
    """Sweeps waiting for a dispatcher: queued and not imported (imported results are never run)."""
    q = select(func.count()).select_from(Sweep).where(Sweep.status == "queued", Sweep.imported.is_(False))
    return int(s.scalar(q) or 0)


def trial_counts_for_sweeps(s: Session, sweep_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """sweep id -> trial status -> count, for a page of sweeps in one query."""
    out: dict[int, dict[str, int]] = {i: {} for i in sweep_ids}
    if not sweep_ids:
        return out
    rows = s.execute(
        select(Trial.sweep_id, Trial.status, func.count())
        .where(Trial.sweep_id.in_(list(sweep_ids)))
        .group_by(Trial.sweep_id, Trial.status)
    ).all()
    for sweep_id, status, n in rows:
        out[int(sweep_id)][status] = int(n)
    return out


def trial_counts_by_cell(s: Session, sweep_id: int) -> dict[int, dict[str, int]]:
    """cell id -> trial status -> count, for one sweep."""
    rows = s.execute(
        select(Trial.cell_id, Trial.status, func.count())
        .where(Trial.sweep_id == sweep_id)
        .group_by(Trial.cell_id, Trial.status)
    ).all()
    out: dict[int, dict[str, int]] = {}
    for cell_id, status, n in rows:
        out.setdefault(int(cell_id), {})[status] = int(n)
    return out


def trials_by_status(s: Session) -> dict[str, int]:
    """Trial status -> count over every sweep (the /metrics gauge)."""
    rows = s.execute(select(Trial.status, func.count()).group_by(Trial.status)).all()
    return {status: int(n) for status, n in rows}


def device_seconds_used(s: Session, sweep_id: int) -> float:
    """Compute used by a sweep: the sum of its trials' device seconds (unknown ones count as 0)."""
    return float(s.scalar(select(func.coalesce(func.sum(Trial.device_seconds), 0.0)).where(Trial.sweep_id == sweep_id)))


def finished_trial_times(s: Session, sweep_id: int) -> list[tuple[datetime, datetime]]:
    """(started_at, finished_at) of a sweep's finished trials (completed, diverged, failed) that have both."""
    rows = s.execute(
        select(Trial.started_at, Trial.finished_at).where(
            Trial.sweep_id == sweep_id,
            Trial.status.in_([*TRIAL_FINISHED, "failed"]),
            Trial.started_at.is_not(None),
            Trial.finished_at.is_not(None),
        )
    ).all()
    return [(started, finished) for started, finished in rows if started is not None and finished is not None]


def cancel_open_cells(s: Session, sweep_id: int) -> int:
    """Cells still pending or running are cancelled with their sweep (the engine plans only open cells)."""
    res = s.execute(
        update(Cell)
        .where(Cell.sweep_id == sweep_id, Cell.status.in_(["pending", "running"]))
        .values(status="cancelled"),
        execution_options={"synchronize_session": False},
    )
    return int(getattr(res, "rowcount", 0) or 0)


# ---- trials -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialFilter:
    status: str | None = None
    cell: str | None = None  # the cell key "optimizer/scale/chinchilla"
    optimizer: str | None = None
    scale: str | None = None
    chinchilla: float | None = None


# Any SELECT: the filter applies to the page query and to its count query alike.
_Q = TypeVar("_Q", bound=Select[*tuple[Any, ...]])


def _filtered(q: _Q, sweep_id: int, f: TrialFilter) -> _Q:
    q = q.where(Trial.sweep_id == sweep_id)
    if f.status is not None:
        q = q.where(Trial.status == f.status)
    if f.cell is not None:
        q = q.where(Cell.key == f.cell)
    if f.optimizer is not None:
        q = q.where(Cell.optimizer == f.optimizer)
    if f.scale is not None:
        q = q.where(Cell.scale == f.scale)
    if f.chinchilla is not None:
        q = q.where(Cell.chinchilla == f.chinchilla)
    return q


def list_trials(
    s: Session, sweep_id: int, f: TrialFilter, limit: int, offset: int
) -> tuple[list[tuple[Trial, Cell]], int]:
    """A page of a sweep's trials with their cells (oldest first) and the total that match the filter."""
    joined = select(Trial, Cell).join(Cell, Trial.cell_id == Cell.id)
    rows = s.execute(_filtered(joined, sweep_id, f).order_by(Trial.id).limit(limit).offset(offset)).all()
    count = select(func.count()).select_from(Trial).join(Cell, Trial.cell_id == Cell.id)
    total = int(s.scalar(_filtered(count, sweep_id, f)) or 0)
    return [(t, c) for t, c in rows], total


def trials_with_cells(s: Session, sweep_id: int) -> list[tuple[Trial, Cell]]:
    """Every trial of a sweep with its cell, oldest first (the export)."""
    rows = s.execute(
        select(Trial, Cell).join(Cell, Trial.cell_id == Cell.id).where(Trial.sweep_id == sweep_id).order_by(Trial.id)
    ).all()
    return [(t, c) for t, c in rows]


# ---- best configs across sweeps -----------------------------------------------------------------------


def cells_with_sweeps(
    s: Session, optimizer: str | None = None, scale: str | None = None, chinchilla: float | None = None
) -> list[tuple[Cell, Sweep]]:
    """Every cell of every sweep (imported ones too) matching the filter, with its sweep."""
    q = select(Cell, Sweep).join(Sweep, Cell.sweep_id == Sweep.id)
    if optimizer is not None:
        q = q.where(Cell.optimizer == optimizer)
    if scale is not None:
        q = q.where(Cell.scale == scale)
    if chinchilla is not None:
        q = q.where(Cell.chinchilla == chinchilla)
    return [(c, sw) for c, sw in s.execute(q.order_by(Cell.id)).all()]


def finished_trials_of_cells(s: Session, cell_ids: Sequence[int]) -> list[Trial]:
    """Finished trials (completed, diverged) of the given cells, oldest first."""
    if not cell_ids:
        return []
    q = select(Trial).where(Trial.cell_id.in_(list(cell_ids)), Trial.status.in_(TRIAL_FINISHED)).order_by(Trial.id)
    return list(s.scalars(q))


# ---- operations ---------------------------------------------------------------------------------------


def ping(s: Session) -> bool:
    """The database answers a trivial query (the health check)."""
    return s.execute(select(1)).scalar() == 1
