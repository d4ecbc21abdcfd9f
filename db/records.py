"""Plain, frozen copies of our rows: what db/ hands to code outside it instead of ORM objects (issue 15).

An ORM object is tied to its session: after the session ends it is detached (an unloaded attribute raises), an
UPDATE through db.repository or db.transitions leaves it stale, and an assignment to it is a write that no
compare-and-set guards. A record is none of these: a snapshot of the row as the reading transaction saw it,
built inside the session by the db function that read it. To see a later change, read the row again
(db.repository.get_sweep, get_cell, get_trial); to change it, call a db function (db.transitions,
db.repository).

Each record holds every column of its table under the column's name, so that code which read the ORM row's
attributes reads the record's the same way; relationships are not copied (ask db.repository for a cell's
trials, or a trial's cell). JSON columns are the values the session loaded (dicts and lists), not copies:
changing one changes nothing in the database, as it did not on the ORM row.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from db.models import Cell, CurvePoint, Sweep, Trial

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


@dataclass(frozen=True, slots=True)
class SweepRecord:
    """A row of `sweeps` (db.models.Sweep)."""

    id: int
    name: str
    status: str
    spec: dict[str, Any]
    idempotency_key: str | None
    imported: bool
    executor: str
    error: str | None
    claimed_by: str | None
    lease_expires_at: datetime | None
    lease_epoch: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class CellRecord:
    """A row of `cells` (db.models.Cell)."""

    id: int
    sweep_id: int
    key: str
    optimizer: str
    scale: str
    chinchilla: float
    strategy: str
    space: dict[str, Any]
    settings: dict[str, Any]
    status: str
    round: int
    best_trial_id: int | None
    best_loss: float | None
    best_config: dict[str, Any] | None
    near_ties: list[Any] | None


@dataclass(frozen=True, slots=True)
class TrialRecord:
    """A row of `sweep_trials` (db.models.Trial)."""

    id: int
    sweep_id: int
    cell_id: int
    config_key: str
    config: dict[str, Any]
    seed: int
    round: int
    status: str
    attempts: int
    final_loss: float | None
    initial_loss: float | None
    reason: str | None
    steps: int | None
    total_steps: int | None
    tokens: int | None
    tokens_per_second: float | None
    device_seconds: float | None
    repro: dict[str, Any] | None
    worker: str | None
    lease_expires_at: datetime | None
    optuna_trial: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class CurvePointRecord:
    """A row of `curve_points` (db.models.CurvePoint)."""

    trial_id: int
    step: int
    eval_loss: float | None
    train_loss: float | None


_R = TypeVar("_R", bound="DataclassInstance")


def _copy(record: type[_R], row: object) -> _R:
    return record(**{f.name: getattr(row, f.name) for f in fields(record)})


def sweep_record(row: Sweep) -> SweepRecord:
    return _copy(SweepRecord, row)


def cell_record(row: Cell) -> CellRecord:
    return _copy(CellRecord, row)


def trial_record(row: Trial) -> TrialRecord:
    return _copy(TrialRecord, row)


def curve_point_record(row: CurvePoint) -> CurvePointRecord:
    return _copy(CurvePointRecord, row)


# Every column of each table has its field (tests/db/test_records.py checks it against the mappers).
RECORD_OF: dict[type[Any], type[Any]] = {
    Sweep: SweepRecord,
    Cell: CellRecord,
    Trial: TrialRecord,
    CurvePoint: CurvePointRecord,
}
