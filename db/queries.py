"""Read queries of the REST API (and one cancel helper). All SQL lives in db/ (DESIGN.md).

Functions take a Session and return plain values or frozen records (never ORM objects: issue 15), like
db.repository; they never commit. Grouped counts are done in SQL so a page of results costs a fixed number of
queries, not one per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Float, Select, Text, and_, bindparam, case, cast, func, select, update
from sqlalchemy.orm import Session

from db.models import TRIAL_ENDED, TRIAL_RANKED, Cell, Sweep, Trial
from db.records import CellRecord, TrialRecord, cell_record, trial_record

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


def cell_counts_for_sweeps(s: Session, sweep_ids: Sequence[int]) -> dict[int, int]:
    """sweep id -> number of cells, for a page of sweeps in one query."""
    out = dict.fromkeys(sweep_ids, 0)
    if sweep_ids:
        rows = s.execute(
            select(Cell.sweep_id, func.count()).where(Cell.sweep_id.in_(list(sweep_ids))).group_by(Cell.sweep_id)
        ).all()
        out.update({int(sweep_id): int(n) for sweep_id, n in rows})
    return out


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


def trials_by_status(s: Session) -> dict[str, int]:
    """Trial status -> count over every sweep (the /metrics gauge)."""
    rows = s.execute(select(Trial.status, func.count()).group_by(Trial.status)).all()
    return {status: int(n) for status, n in rows}


# Trials whose durations estimate a sweep's time left: results and failures alike took a slot.
ETA_STATUSES = TRIAL_ENDED


def _duration_seconds(dialect: str) -> ColumnElement[Any]:
    """finished_at - started_at in seconds, in SQL (NULL when either is NULL). SQLite stores DATETIME as ISO text,
    which julianday() reads (days, as a double: ~50 us resolution for dates of this century); PostgreSQL has
    interval arithmetic."""
    if dialect == "sqlite":
        days = func.julianday(Trial.finished_at) - func.julianday(Trial.started_at)
        return cast(days * 86400.0, Float)
    return cast(func.extract("epoch", Trial.finished_at - Trial.started_at), Float)


def _sweep_trial_stats_query(dialect: str) -> Select[*tuple[Any, ...]]:
    # Parsing SQLite's text timestamps is most of this query's cost: each row's duration is computed once (in the
    # sum), and the rows that have one are counted from the NULL tests alone.
    timed = case((and_(Trial.started_at.is_not(None), Trial.finished_at.is_not(None)), 1))
    return (
        select(
            Trial.cell_id,
            Trial.status,
            func.count(),
            func.sum(Trial.device_seconds),
            func.sum(_duration_seconds(dialect)),
            func.count(timed),
        )
        .where(Trial.sweep_id == bindparam("sweep_id"))
        .group_by(Trial.cell_id, Trial.status)
    )


# Built once per dialect: building a statement costs about as much as running this one on a small sweep.
_SWEEP_TRIAL_STATS = {dialect: _sweep_trial_stats_query(dialect) for dialect in ("sqlite", "postgresql")}


@dataclass(frozen=True)
class SweepTrialStats:
    """What a sweep's progress needs from its trials, from one grouped query."""

    by_cell: dict[int, dict[str, int]]  # cell id -> trial status -> count
    by_status: dict[str, int]  # trial status -> count over the sweep
    device_seconds: float  # sum of the trials' device seconds (unknown ones count as 0)
    mean_finished_seconds: float | None  # mean duration of finished trials (ETA_STATUSES); None before any


def sweep_trial_stats(s: Session, sweep_id: int) -> SweepTrialStats:
    """Counts per cell and status, compute used and the mean finished-trial duration of a sweep, in one pass over
    the index ix_sweep_trials_progress (no table rows read): GET /sweeps/{id} with 10k trials a sweep."""
    conn = s.connection()  # plain rows: the ORM's result machinery is not needed for a few grouped numbers
    dialect = conn.dialect.name
    query = _SWEEP_TRIAL_STATS.get(dialect)
    if query is None:
        query = _SWEEP_TRIAL_STATS[dialect] = _sweep_trial_stats_query(dialect)
    rows = conn.execute(query, {"sweep_id": sweep_id}).all()
    by_cell: dict[int, dict[str, int]] = {}
    by_status: dict[str, int] = {}
    device = 0.0
    total_seconds, finished = 0.0, 0
    for cell_id, status, n, device_seconds, seconds, timed in rows:
        by_cell.setdefault(int(cell_id), {})[status] = int(n)
        by_status[status] = by_status.get(status, 0) + int(n)
        device += float(device_seconds or 0.0)
        if status in ETA_STATUSES and timed:
            total_seconds += float(seconds)
            finished += int(timed)
    mean = total_seconds / finished if finished else None
    return SweepTrialStats(by_cell, by_status, device, mean)


def last_trial_id(s: Session, sweep_id: int) -> int | None:
    """The sweep's newest trial id (one step down the index (sweep_id, id))."""
    return s.connection().execute(_LAST_TRIAL_ID, {"sweep_id": sweep_id}).scalar()


_LAST_TRIAL_ID = select(func.max(Trial.id)).where(Trial.sweep_id == bindparam("sweep_id"))


@dataclass(frozen=True, slots=True)
class ProgressCell:
    """What a sweep's progress shows of a cell (sweep_service.service.sweeps.cells): not its search space; each
    field is the `cells` column of its name (PROGRESS_CELL_COLUMNS). Its settings are read for the seed noise
    (sweep_service.noise.summary)."""

    id: int
    sweep_id: int
    key: str
    optimizer: str
    scale: str
    chinchilla: float
    strategy: str
    status: str
    round: int
    best_loss: float | None
    best_config: dict[str, Any] | None
    best_trial_id: int | None
    near_ties: list[Any] | None
    settings: dict[str, Any]


# The columns are the dataclass's fields, in its order (one list to keep, not two).
PROGRESS_CELL_COLUMNS = tuple(getattr(Cell, field.name) for field in fields(ProgressCell))


_PROGRESS_CELLS = select(*PROGRESS_CELL_COLUMNS).where(Cell.sweep_id == bindparam("sweep_id")).order_by(Cell.id)


def progress_cells(s: Session, sweep_id: int) -> list[ProgressCell]:
    """A sweep's cells in id order with the columns of its progress (PROGRESS_CELL_COLUMNS), as plain rows."""
    return [ProgressCell(*tuple(row)) for row in s.execute(_PROGRESS_CELLS, {"sweep_id": sweep_id})]


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


def sweep_exists(s: Session, sweep_id: int) -> bool:
    return s.scalar(select(Sweep.id).where(Sweep.id == sweep_id)) is not None


@dataclass(frozen=True, slots=True)
class TrialRow:
    """What a page of trials shows of a trial and its cell (api.views.trial_summary), in select order; the
    reproducibility record and the rest stay unread."""

    id: int
    sweep_id: int
    cell: str  # the cell's key
    optimizer: str
    scale: str
    chinchilla: float
    seed: int
    round: int
    status: str
    final_loss: float | None
    reason: str | None
    config: dict[str, Any]
    steps: int | None
    total_steps: int | None
    device_seconds: float | None
    started_at: datetime | None
    finished_at: datetime | None


_TRIAL_ROW = select(
    Trial.id,
    Trial.sweep_id,
    Cell.key,
    Cell.optimizer,
    Cell.scale,
    Cell.chinchilla,
    Trial.seed,
    Trial.round,
    Trial.status,
    Trial.final_loss,
    Trial.reason,
    Trial.config,
    Trial.steps,
    Trial.total_steps,
    Trial.device_seconds,
    Trial.started_at,
    Trial.finished_at,
).join(Cell, Trial.cell_id == Cell.id)


def list_trials(s: Session, sweep_id: int, f: TrialFilter, limit: int, offset: int) -> tuple[list[TrialRow], int]:
    """A page of a sweep's trials with their cells (oldest first) and the total that match the filter.

    Two steps: the page's ids first, from the index (sweep_id, id) (or (sweep_id, status)) alone, then only
    those rows; a plain ORDER BY ... OFFSET would read every row before the offset. The cells are joined only
    when a cell filter needs them. Plain rows, not ORM objects: building 50 mapped objects and their cells cost
    more than the SQL."""
    by_cell = any(v is not None for v in (f.cell, f.optimizer, f.scale, f.chinchilla))
    ids_q = select(Trial.id)
    count_q = select(func.count()).select_from(Trial)
    if by_cell:
        ids_q = ids_q.join(Cell, Trial.cell_id == Cell.id)
        count_q = count_q.join(Cell, Trial.cell_id == Cell.id)
    conn = s.connection()  # plain rows, without the ORM's result machinery
    ids = list(conn.execute(_filtered(ids_q, sweep_id, f).order_by(Trial.id).limit(limit).offset(offset)).scalars())
    if ids and len(ids) < limit:
        total = offset + len(ids)  # the last page: no count needed
    else:
        total = int(conn.execute(_filtered(count_q, sweep_id, f)).scalar() or 0)
    if not ids:
        return [], total
    rows = conn.execute(_TRIAL_ROW.where(Trial.id.in_(ids)).order_by(Trial.id))
    return [TrialRow(*tuple(row)) for row in rows], total


def trials_with_cells(s: Session, sweep_id: int) -> list[tuple[TrialRecord, CellRecord]]:
    """Every trial of a sweep with its cell, oldest first (the export)."""
    rows = s.execute(
        select(Trial, Cell)
        .join(Cell, Trial.cell_id == Cell.id)
        .where(Trial.sweep_id == sweep_id)
        .order_by(Trial.id)
        .execution_options(populate_existing=True)
    ).all()
    return [(trial_record(t), cell_record(c)) for t, c in rows]


# ---- best configs across sweeps -----------------------------------------------------------------------
# (the cells and trials the use case ranks: best_cell_rows and finished_trial_rows, in the block at the end)


def cell_names(s: Session) -> tuple[list[str], list[str]]:
    """(optimizers, scales) that some cell of some sweep names, imported ones too (which may name scales and
    optimizers outside the catalog), sorted."""
    optimizers = list(s.scalars(select(Cell.optimizer).distinct().order_by(Cell.optimizer)))
    scales = list(s.scalars(select(Cell.scale).distinct().order_by(Cell.scale)))
    return optimizers, scales


_FINISHED_IN_CELL = (
    select(func.count())
    .select_from(Trial)
    .where(Trial.sweep_id == Cell.sweep_id, Trial.cell_id == Cell.id, Trial.status.in_(TRIAL_RANKED))
    .scalar_subquery()
)
_BEST_INPUTS = select(
    Cell.id,
    Cell.sweep_id,
    Cell.best_loss,
    Cell.best_trial_id,
    cast(Cell.best_config, Text),
    cast(Cell.near_ties, Text),
    cast(Cell.settings, Text),
    case((Cell.best_loss.is_(None), _FINISHED_IN_CELL)),  # NULL for a cell with a recorded best
).order_by(Cell.id)


def best_inputs_version(s: Session) -> tuple[tuple[Any, ...], ...]:
    """Everything GET /best's answer depends on, as plain values, for a cache of its answers: per cell its id,
    sweep, recorded best (loss, trial, config and near-ties as stored JSON text, not parsed) and settings, and
    for a cell without a recorded best the number of its finished trials (the answer is then ranked from them;
    finished trials never change and are never removed but with their cell). Sweep names and the imported flag
    are written once, with the sweep; cells are never moved between sweeps.

    One query over the cells, plus an index-only count (ix_sweep_trials_progress) for each cell without a best:
    far cheaper than parsing every cell's JSON and ranking."""
    return tuple(tuple(row) for row in s.connection().execute(_BEST_INPUTS).all())


# ---- operations ---------------------------------------------------------------------------------------


def ping(s: Session) -> bool:
    """The database answers a trivial query (the health check)."""
    return s.execute(select(1)).scalar() == 1


# ---- best, export, import (sweep_service.service) ----------------------------------------------------------
# Plain rows for the use cases (sweep_service.service.best and .exports): no ORM object leaves db/.


@dataclass(frozen=True, slots=True)
class BestCellRow:
    """A cell as GET /best ranks it, with its sweep's id, name and imported flag (columns in select order)."""

    id: int
    key: str
    optimizer: str
    scale: str
    chinchilla: float
    settings: dict[str, Any] | None
    best_trial_id: int | None
    best_loss: float | None
    best_config: dict[str, Any] | None
    near_ties: list[Any] | None
    sweep_id: int
    sweep_name: str
    sweep_imported: bool


_BEST_CELL_ROWS = select(
    Cell.id,
    Cell.key,
    Cell.optimizer,
    Cell.scale,
    Cell.chinchilla,
    Cell.settings,
    Cell.best_trial_id,
    Cell.best_loss,
    Cell.best_config,
    Cell.near_ties,
    Sweep.id,
    Sweep.name,
    Sweep.imported,
).join(Sweep, Cell.sweep_id == Sweep.id)


def best_cell_rows(
    s: Session, optimizer: str | None = None, scale: str | None = None, chinchilla: float | None = None
) -> list[BestCellRow]:
    """Every cell of every sweep (imported ones too) matching the filter, in id order, with its sweep's id, name
    and imported flag: what GET /best ranks, not the cell's search space nor the sweep's spec."""
    q = _BEST_CELL_ROWS
    if optimizer is not None:
        q = q.where(Cell.optimizer == optimizer)
    if scale is not None:
        q = q.where(Cell.scale == scale)
    if chinchilla is not None:
        q = q.where(Cell.chinchilla == chinchilla)
    return [BestCellRow(*tuple(row)) for row in s.connection().execute(q.order_by(Cell.id))]


@dataclass(frozen=True, slots=True)
class FinishedTrialRow:
    """What ranking reads of a finished trial (columns in select order)."""

    id: int
    cell_id: int
    config: dict[str, Any]
    seed: int
    status: str
    final_loss: float | None


def finished_trial_rows(s: Session, cell_ids: Sequence[int]) -> list[FinishedTrialRow]:
    """Finished trials (completed, diverged) of the given cells, oldest first, as plain values."""
    if not cell_ids:
        return []
    q = (
        select(Trial.id, Trial.cell_id, Trial.config, Trial.seed, Trial.status, Trial.final_loss)
        .where(Trial.cell_id.in_(list(cell_ids)), Trial.status.in_(TRIAL_RANKED))
        .order_by(Trial.id)
    )
    return [FinishedTrialRow(*tuple(row)) for row in s.connection().execute(q)]


# The export's columns (sweep_service.service.exports.COLUMNS) but the config, as labels of one select.
_EXPORT_ROWS = (
    select(
        Trial.id.label("trial_id"),
        Trial.sweep_id.label("sweep_id"),
        Cell.key.label("cell"),
        Cell.optimizer.label("optimizer"),
        Cell.scale.label("scale"),
        Cell.chinchilla.label("chinchilla"),
        Trial.seed.label("seed"),
        Trial.round.label("round"),
        Trial.status.label("status"),
        Trial.final_loss.label("final_loss"),
        Trial.initial_loss.label("initial_loss"),
        Trial.reason.label("reason"),
        Trial.steps.label("steps"),
        Trial.total_steps.label("total_steps"),
        Trial.tokens.label("tokens"),
        Trial.tokens_per_second.label("tokens_per_second"),
        Trial.device_seconds.label("device_seconds"),
        Trial.attempts.label("attempts"),
        Trial.worker.label("worker"),
        Trial.created_at.label("created_at"),
        Trial.started_at.label("started_at"),
        Trial.finished_at.label("finished_at"),
        Trial.repro.label("repro"),
        Trial.config.label("config"),
    )
    .join(Cell, Trial.cell_id == Cell.id)
    .where(Trial.sweep_id == bindparam("sweep_id"))
    .order_by(Trial.id)
)


def export_rows(s: Session, sweep_id: int) -> list[dict[str, Any]]:
    """Every trial of a sweep with its cell's key and names, oldest first, as a dict per trial keyed by the
    export's column names (plus `config`, the trial's resolved hyperparameters)."""
    return [dict(row) for row in s.connection().execute(_EXPORT_ROWS, {"sweep_id": sweep_id}).mappings()]
