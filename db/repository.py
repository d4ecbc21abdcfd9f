"""All SQL lives here. Functions take a Session and return plain values or records (db/records.py): frozen
copies of rows, read fresh from the database (`populate_existing`: not an object the session loaded earlier and an
UPDATE here has since made stale). No ORM object leaves db/ (issue 15).

State transitions are compare-and-set: one UPDATE ... WHERE status IN (...) whose row count says whether
this caller won (Optuna's storages do the same, STYLE.md). Two drivers can race on a row and exactly one
wins, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, CursorResult, and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from db.models import (
    SWEEP_TERMINAL,
    TRIAL_RANKED,
    TRIAL_TERMINAL,
    Base,
    Cell,
    CurvePoint,
    SuggestionRequest,
    Sweep,
    Trial,
    config_key,  # here since the first version: repository.config_key is how callers name it
    utcnow,
)
from db.records import (
    CellRecord,
    CurvePointRecord,
    SweepRecord,
    TrialRecord,
    cell_record,
    curve_point_record,
    sweep_record,
    trial_record,
)

# A SELECT that overwrites what the session holds of the rows it reads: UPDATEs here do not synchronize the
# session (synchronize_session=False), so without it a row read earlier in the transaction would come back stale.
FRESH = {"populate_existing": True}

# ---- sweeps -------------------------------------------------------------------------------------------


def create_sweep(
    s: Session, name: str, spec: dict[str, Any], idempotency_key: str | None = None, imported: bool = False
) -> SweepRecord:
    executor = "external" if spec.get("executor") == "external" else "ray"
    sweep = Sweep(name=name, spec=spec, idempotency_key=idempotency_key, imported=imported, executor=executor)
    s.add(sweep)
    s.flush()
    return sweep_record(sweep)


def get_sweep(s: Session, sweep_id: int) -> SweepRecord | None:
    sweep = s.get(Sweep, sweep_id, populate_existing=True)
    return sweep_record(sweep) if sweep is not None else None


def sweep_by_idempotency_key(s: Session, key: str) -> SweepRecord | None:
    sweep = s.scalars(select(Sweep).where(Sweep.idempotency_key == key).execution_options(**FRESH)).first()
    return sweep_record(sweep) if sweep is not None else None


def list_sweeps(s: Session, status: str | None = None, limit: int = 50, offset: int = 0) -> list[SweepRecord]:
    q = select(Sweep).order_by(Sweep.id.desc()).limit(limit).offset(offset).execution_options(**FRESH)
    if status:
        q = q.where(Sweep.status == status)
    return [sweep_record(sweep) for sweep in s.scalars(q)]


def set_sweep_error(s: Session, sweep_id: int, error: str | None, only_if_prefix: str | None = None) -> bool:
    """Set the sweep's `error` note (what it waits for, sweep_service.resource_wait); with `only_if_prefix`, only
    where the note starts with it (clearing one's own note, not another's). True when a row was changed."""
    q = update(Sweep).where(Sweep.id == sweep_id)
    if only_if_prefix is not None:
        q = q.where(Sweep.error.startswith(only_if_prefix, autoescape=True))
    res = s.execute(q.values(error=error), execution_options={"synchronize_session": False})
    return _rowcount(res) == 1


def set_sweep_status(s: Session, sweep_id: int, from_statuses: Sequence[str], to: str, **fields: Any) -> bool:
    """Compare-and-set the sweep's status; True when this call made the change."""
    values: dict[str, Any] = {"status": to, **fields}
    if to == "running":
        values.setdefault("started_at", utcnow())
    if to in SWEEP_TERMINAL:
        values.setdefault("finished_at", utcnow())
    res = s.execute(
        update(Sweep).where(Sweep.id == sweep_id, Sweep.status.in_(from_statuses)).values(**values),
        execution_options={"synchronize_session": False},
    )
    return _rowcount(res) == 1


def claim_sweep(
    s: Session, sweep_id: int, owner: str, lease_seconds: float, steal_from: tuple[str, int] | None = None
) -> int | None:
    """Claim a queued sweep, or a running one whose lease expired (its dispatcher died), or, with `steal_from`
    (holder, epoch), the one that holder holds (a process known to be dead). Compare-and-set; the claim bumps
    the sweep's lease epoch (the fencing token, `fence`). Returns the new epoch, None when another caller won."""
    now = utcnow()
    claimable = or_(
        Sweep.status == "queued",
        and_(Sweep.status == "running", or_(Sweep.lease_expires_at.is_(None), Sweep.lease_expires_at < now)),
    )
    if steal_from is not None:
        claimable = or_(
            claimable,
            and_(Sweep.status == "running", Sweep.claimed_by == steal_from[0], Sweep.lease_epoch == steal_from[1]),
        )
    res = s.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.executor != "external", claimable)
        .values(
            status="running",
            claimed_by=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            lease_epoch=Sweep.lease_epoch + 1,
            started_at=func.coalesce(Sweep.started_at, now),
        ),
        execution_options={"synchronize_session": False},
    )
    if _rowcount(res) != 1:
        return None
    return int(s.scalars(select(Sweep.lease_epoch).where(Sweep.id == sweep_id)).one())


def claimable_sweep_ids(s: Session, limit: int = 10) -> list[int]:
    now = utcnow()
    q = (
        select(Sweep.id)
        .where(
            or_(
                Sweep.status == "queued",
                and_(Sweep.status == "running", or_(Sweep.lease_expires_at.is_(None), Sweep.lease_expires_at < now)),
            ),
            Sweep.imported.is_(False),
            Sweep.executor != "external",  # outside workers run it (sweep_service.external)
        )
        .order_by(Sweep.id)
        .limit(limit)
    )
    return list(s.scalars(q))


def heartbeat(s: Session, sweep_id: int, owner: str, lease_seconds: float, epoch: int | None = None) -> bool:
    """Extend the lease; False when another dispatcher holds the sweep now (stop working on it)."""
    conditions = [Sweep.id == sweep_id, Sweep.claimed_by == owner, Sweep.status == "running"]
    if epoch is not None:
        conditions.append(Sweep.lease_epoch == epoch)
    res = s.execute(
        update(Sweep).where(*conditions).values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds)),
        execution_options={"synchronize_session": False},
    )
    return _rowcount(res) == 1


def fence(s: Session, sweep_id: int, epoch: int) -> bool:
    """Whether the caller still holds lease `epoch` of the sweep, checked with a write to the sweep's row so
    that the rest of this transaction commits before any later claim does: PostgreSQL holds the row lock,
    SQLite the database's write lock, until the commit. Call it first in every write transaction of a run."""
    res = s.execute(
        update(Sweep).where(Sweep.id == sweep_id, Sweep.lease_epoch == epoch).values(lease_epoch=Sweep.lease_epoch),
        execution_options={"synchronize_session": False},
    )
    return _rowcount(res) == 1


def release_lease(s: Session, sweep_id: int, epoch: int) -> bool:
    """Give the lease up (a run stopping resumably): any dispatcher may claim the sweep at once."""
    res = s.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.lease_epoch == epoch)
        .values(claimed_by=None, lease_expires_at=None),
        execution_options={"synchronize_session": False},
    )
    return _rowcount(res) == 1


# ---- cells --------------------------------------------------------------------------------------------


def add_cell(s: Session, sweep_id: int, **fields: Any) -> CellRecord:
    cell = Cell(sweep_id=sweep_id, **fields)
    s.add(cell)
    s.flush()
    return cell_record(cell)


def get_cell(s: Session, cell_id: int) -> CellRecord | None:
    """The cell as the database holds it now (after an update through db.transitions or update_cell)."""
    cell = s.get(Cell, cell_id, populate_existing=True)
    return cell_record(cell) if cell is not None else None


def cells_of(s: Session, sweep_id: int) -> list[CellRecord]:
    q = select(Cell).where(Cell.sweep_id == sweep_id).order_by(Cell.id).execution_options(**FRESH)
    return [cell_record(cell) for cell in s.scalars(q)]


def update_cell(s: Session, cell_id: int, **fields: Any) -> None:
    s.execute(update(Cell).where(Cell.id == cell_id).values(**fields), execution_options={"synchronize_session": False})


def find_cells(
    s: Session, optimizer: str | None = None, scale: str | None = None, chinchilla: float | None = None
) -> list[CellRecord]:
    q = select(Cell).execution_options(**FRESH)
    if optimizer is not None:
        q = q.where(Cell.optimizer == optimizer)
    if scale is not None:
        q = q.where(Cell.scale == scale)
    if chinchilla is not None:
        q = q.where(Cell.chinchilla == chinchilla)
    return [cell_record(cell) for cell in s.scalars(q.order_by(Cell.id))]


# ---- trials -------------------------------------------------------------------------------------------


def add_trial(
    s: Session, cell: CellRecord, searched: dict[str, Any], config: dict[str, Any], seed: int, round_: int
) -> TrialRecord | None:
    """Insert a pending trial unless this (cell, config, seed) exists already (then None: nothing runs twice)."""
    key = config_key(searched)
    exists = s.scalars(
        select(Trial.id).where(Trial.cell_id == cell.id, Trial.config_key == key, Trial.seed == seed)
    ).first()
    if exists is not None:
        return None
    trial = Trial(sweep_id=cell.sweep_id, cell_id=cell.id, config_key=key, config=config, seed=seed, round=round_)
    s.add(trial)
    s.flush()
    return trial_record(trial)


def get_trial(s: Session, trial_id: int) -> TrialRecord | None:
    trial = s.get(Trial, trial_id, populate_existing=True)
    return trial_record(trial) if trial is not None else None


def trials_of_cell(s: Session, cell_id: int, statuses: Iterable[str] | None = None) -> list[TrialRecord]:
    q = select(Trial).where(Trial.cell_id == cell_id).order_by(Trial.id).execution_options(**FRESH)
    if statuses is not None:
        q = q.where(Trial.status.in_(list(statuses)))
    return [trial_record(trial) for trial in s.scalars(q)]


def trials_of_sweep(s: Session, sweep_id: int, statuses: Iterable[str] | None = None) -> list[TrialRecord]:
    q = select(Trial).where(Trial.sweep_id == sweep_id).order_by(Trial.id).execution_options(**FRESH)
    if statuses is not None:
        q = q.where(Trial.status.in_(list(statuses)))
    return [trial_record(trial) for trial in s.scalars(q)]


def transition_trial(s: Session, trial_id: int, from_statuses: Sequence[str], to: str, **fields: Any) -> bool:
    """Compare-and-set a trial's status; True when this call made the change."""
    values: dict[str, Any] = {"status": to, **fields}
    if to == "running":
        values.setdefault("started_at", utcnow())
        values["attempts"] = Trial.attempts + 1
    if to in TRIAL_TERMINAL:
        values.setdefault("finished_at", utcnow())
    res = s.execute(
        update(Trial).where(Trial.id == trial_id, Trial.status.in_(from_statuses)).values(**values),
        execution_options={"synchronize_session": False},
    )
    return _rowcount(res) == 1


def requeue_running(s: Session, sweep_id: int) -> int:
    """Trials left running by a dead driver go back to pending (they re-run; finished ones are kept)."""
    running = list(s.scalars(select(Trial.id).where(Trial.sweep_id == sweep_id, Trial.status == "running")))
    if running:
        s.execute(delete(CurvePoint).where(CurvePoint.trial_id.in_(running)))
    res = s.execute(
        update(Trial)
        .where(Trial.sweep_id == sweep_id, Trial.status == "running")
        .values(status="pending", started_at=None, worker=None),
        execution_options={"synchronize_session": False},
    )
    return _rowcount(res)


def history(s: Session, cell_id: int) -> list[tuple[dict[str, Any], float, int]]:
    """Finished results of a cell as (config, loss, seed); a diverged run's loss is +inf."""
    rows = s.execute(
        select(Trial.config, Trial.final_loss, Trial.status, Trial.seed)
        .where(Trial.cell_id == cell_id, Trial.status.in_(TRIAL_RANKED))
        .order_by(Trial.id)
    )
    out = []
    for config, loss, status, seed in rows:
        value = loss if status == "completed" and loss is not None else math.inf
        out.append((config, value, seed))
    return out


def add_curve_points(s: Session, trial_id: int, points: Iterable[tuple[int, float | None, float | None]]) -> None:
    """(step, eval_loss, train_loss) rows; a step already stored is replaced (a retried trial reports again)."""
    for step, eval_loss, train_loss in points:
        s.merge(CurvePoint(trial_id=trial_id, step=step, eval_loss=eval_loss, train_loss=train_loss))


def curve(s: Session, trial_id: int) -> list[CurvePointRecord]:
    q = select(CurvePoint).where(CurvePoint.trial_id == trial_id).order_by(CurvePoint.step).execution_options(**FRESH)
    return [curve_point_record(point) for point in s.scalars(q)]


def count_trials_by_status(s: Session, sweep_id: int) -> dict[str, int]:
    rows = s.execute(select(Trial.status, func.count()).where(Trial.sweep_id == sweep_id).group_by(Trial.status)).all()
    return {status: int(n) for status, n in rows}


def cancel_unfinished(s: Session, sweep_id: int, reason: str) -> int:
    res = s.execute(
        update(Trial)
        .where(Trial.sweep_id == sweep_id, Trial.status.in_(["pending", "running"]))
        .values(status="cancelled", reason=reason, finished_at=utcnow()),
        execution_options={"synchronize_session": False},
    )
    return _rowcount(res)


def bulk_insert(conn: Connection, table: str, rows: Sequence[dict[str, Any]]) -> None:
    """Insert plain rows (column name -> value, ids included) into one of our tables by name ("sweeps", "cells",
    "sweep_trials", "curve_points") in one executemany, building no ORM object: a bulk load (bench/api_load.py)."""
    if rows:
        conn.execute(insert(Base.metadata.tables[table]), list(rows))


def _rowcount(result: Any) -> int:
    return int(result.rowcount) if isinstance(result, CursorResult) else 0


def now() -> datetime:
    return utcnow()


# ---- pause, delete, update (sweep_service.service) ------------------------------------------------------


def pause_sweep(s: Session, sweep_id: int, from_statuses: Sequence[str]) -> bool:
    """Compare-and-set to `paused`, bumping the lease epoch and dropping the lease: the run that held the sweep
    fails its next fenced write or heartbeat and stops (sweep_service/lease.py). True when this call paused it."""
    res = s.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.status.in_(from_statuses))
        .values(status="paused", lease_epoch=Sweep.lease_epoch + 1, claimed_by=None, lease_expires_at=None),
        execution_options={"synchronize_session": False},
    )
    return _rowcount(res) == 1


def delete_sweep(s: Session, sweep_id: int, from_statuses: Sequence[str]) -> tuple[list[str], int] | None:
    """Delete the sweep and its rows if its status is one of `from_statuses`: (its cells' keys, its trial count),
    or None when it is missing or in another status. The first statement is a write on the sweep's row, so a
    dispatcher's claim (an UPDATE of the same row) waits for this transaction and then finds nothing to claim."""
    res = s.execute(
        update(Sweep).where(Sweep.id == sweep_id, Sweep.status.in_(from_statuses)).values(status=Sweep.status),
        execution_options={"synchronize_session": False},
    )
    if _rowcount(res) != 1:
        return None
    keys = list(s.scalars(select(Cell.key).where(Cell.sweep_id == sweep_id).order_by(Cell.id)))
    trial_ids = select(Trial.id).where(Trial.sweep_id == sweep_id).scalar_subquery()
    s.execute(delete(CurvePoint).where(CurvePoint.trial_id.in_(trial_ids)))
    trials = _rowcount(s.execute(delete(Trial).where(Trial.sweep_id == sweep_id)))
    s.execute(delete(SuggestionRequest).where(SuggestionRequest.sweep_id == sweep_id))
    s.execute(delete(Cell).where(Cell.sweep_id == sweep_id))
    s.execute(delete(Sweep).where(Sweep.id == sweep_id))
    return keys, trials


def update_sweep(s: Session, sweep_id: int, name: str | None, spec_changes: dict[str, Any]) -> None:
    """Set the sweep's name and merge `spec_changes` into its stored spec (the spec's `name` follows the row's)."""
    sweep = s.get(Sweep, sweep_id)
    if sweep is None:
        return
    spec = dict(sweep.spec)
    spec.update(spec_changes)
    values: dict[str, Any] = {"spec": spec}
    if name is not None:
        values["name"] = name
        if "name" in spec:
            spec["name"] = name
    s.execute(
        update(Sweep).where(Sweep.id == sweep_id).values(**values), execution_options={"synchronize_session": False}
    )
