"""SQLAlchemy 2 typed models: sweeps, cells, trials and their curve points.

Optuna keeps its studies in the same database (DESIGN.md) and owns the table names `studies`, `trials`,
`trial_*` and `alembic_version`; ours are `sweeps`, `cells`, `sweep_trials`, `curve_points`, and our Alembic
history lives in `sweep_alembic_version` (db/migrations/env.py).

The database is the source of truth (DESIGN.md): a proposer is a function of a cell's recorded trials,
so a driver that dies recomputes its next step from these rows. Status changes are compare-and-set
updates in db.repository, never read-modify-write in Python.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Trial lifecycle: pending -> running -> completed | diverged | failed | cancelled; a running trial whose
# driver died goes back to pending. Diverged is a result (loss +inf for ranking), never dropped.
TRIAL_STATUSES = ("pending", "running", "completed", "diverged", "failed", "cancelled")
# "Finished" means one of these three, each defined here only (issue 15); everything else imports them.
# A result: a loss to rank by (a diverged run ranks as +inf; its final_loss is NULL). Best configs, near-ties,
# speedups and every analysis count only these.
TRIAL_RANKED = ("completed", "diverged")
# Ended on its own (not cancelled): what a proposer learns from (a failed run ranks as +inf, so it is never
# proposed again), what an outside worker may report, and whose durations predict the next trial's (ETA).
TRIAL_ENDED = (*TRIAL_RANKED, "failed")
# Will never change again.
TRIAL_TERMINAL = (*TRIAL_ENDED, "cancelled")
SWEEP_STATUSES = ("queued", "running", "paused", "completed", "failed", "cancelled")
SWEEP_TERMINAL = ("completed", "failed", "cancelled")  # a sweep that will not run again
CELL_STATUSES = ("pending", "running", "converged", "exhausted", "failed", "cancelled")


def _canonical(value: object) -> object:
    """One hyperparameter value as the config key holds it: a NumPy scalar is its Python value; a number that is
    an integer is that int (1.0 is 1, below 2**53 where floats hold every integer); other floats as they are (repr
    round-trips them); booleans stay booleans (True is not 1); anything else unchanged."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:  # numpy.float64, numpy.int64, numpy.bool_
        value = item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    f = float(value)
    return int(f) if f.is_integer() and abs(f) < 2**53 else float(repr(f))


def config_key(config: Mapping[str, object]) -> str:
    """A config's identity, the one rule everywhere (issue 15): canonical JSON, names sorted, values `_canonical`.

    `Trial.config_key` stores it for the searched config, and (cell, config_key, seed) is unique: nothing runs
    twice. Analysis groups a config's seeds by it, so a config the database holds as one is one config there too.
    Floats compare exactly, with no tolerance: Python's json and the JSON columns of SQLite and PostgreSQL
    give back the float they were given, so a stored config needs none, and a rounding rule would change the keys
    already stored (one written before it would then run again). Matching a value that went through float32 or
    text to a *grid* value is another question, answered with a tolerance by coordinate_descent.SAME_VALUE_RTOL.
    Values JSON cannot hold are keyed by their repr (a config in the database never has one).
    """
    return json.dumps({k: _canonical(v) for k, v in sorted(config.items())}, sort_keys=True, default=repr)


def value_key(value: object) -> str:
    """One value's identity under `config_key`'s rule (two configs have one key iff every name's values do)."""
    return json.dumps(_canonical(value), sort_keys=True, default=repr)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # naive UTC: SQLite has no time zones


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Sweep(Base):
    __tablename__ = "sweeps"
    # SQLite: an id is never handed out twice (deleting the newest row would free it); migration 0005.
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    imported: Mapped[bool] = mapped_column(default=False)
    # "ray" (a dispatcher runs it) or "external" (outside workers pull its trials over REST). Migration 0004.
    executor: Mapped[str] = mapped_column(String(16), default="ray", server_default="ray")
    error: Mapped[str | None] = mapped_column(Text)
    # Dispatcher lease: who runs it and until when the claim holds without a heartbeat.
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    # Fencing token: bumped by every claim; a run writes only while the epoch is the one it claimed (0003).
    lease_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    cells: Mapped[list[Cell]] = relationship(back_populates="sweep", order_by="Cell.id")


class Cell(Base):
    """One (optimizer, scale, chinchilla multiple) to tune; a sweep is a set of cells."""

    __tablename__ = "cells"
    __table_args__ = (UniqueConstraint("sweep_id", "key"), {"sqlite_autoincrement": True})  # migration 0005

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(200))  # "optimizer/scale/chinchilla", unique in its sweep
    optimizer: Mapped[str] = mapped_column(String(64), index=True)
    scale: Mapped[str] = mapped_column(String(64), index=True)
    chinchilla: Mapped[float] = mapped_column(Float, index=True)
    strategy: Mapped[str] = mapped_column(String(32))
    space: Mapped[dict[str, Any]] = mapped_column(JSON)  # grid, baseline, fixed
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # tolerance, budget, seeds, phase
    status: Mapped[str] = mapped_column(String(16), default="pending")
    round: Mapped[int] = mapped_column(Integer, default=0)
    best_trial_id: Mapped[int | None] = mapped_column(Integer)
    best_loss: Mapped[float | None] = mapped_column(Float)
    best_config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    near_ties: Mapped[list[Any] | None] = mapped_column(JSON)

    sweep: Mapped[Sweep] = relationship(back_populates="cells")
    trials: Mapped[list[Trial]] = relationship(back_populates="cell", order_by="Trial.id")


class Trial(Base):
    """One training run of one config in one cell."""

    __tablename__ = "sweep_trials"
    __table_args__ = (
        UniqueConstraint("cell_id", "config_key", "seed"),  # nothing runs twice
        Index("ix_sweep_trials_sweep_status", "sweep_id", "status"),
        # A sweep's trials page (GET /sweeps/{id}/trials) walks this index in id order to its offset, then
        # reads only the page's rows (db.queries.list_trials). Migration 0002.
        Index("ix_sweep_trials_sweep_id_id", "sweep_id", "id"),
        # A sweep's progress (GET /sweeps/{id}) in one index-only pass: counts per cell and status, compute used,
        # and finished trials' durations (db.queries.sweep_trial_stats). Migration 0002.
        Index(
            "ix_sweep_trials_progress",
            "sweep_id",
            "cell_id",
            "status",
            "device_seconds",
            "started_at",
            "finished_at",
        ),
        {"sqlite_autoincrement": True},  # ids never handed out twice on SQLite: migration 0005
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    cell_id: Mapped[int] = mapped_column(ForeignKey("cells.id", ondelete="CASCADE"), index=True)
    config_key: Mapped[str] = mapped_column(String(1000))  # config_key() of the searched config
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # the fully resolved hyperparameters
    seed: Mapped[int] = mapped_column(Integer, default=0)
    round: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    final_loss: Mapped[float | None] = mapped_column(Float)  # NULL unless completed (diverged ranks as +inf)
    initial_loss: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)  # why it diverged, failed or was cancelled
    steps: Mapped[int | None] = mapped_column(Integer)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    tokens: Mapped[int | None] = mapped_column(BigInteger)  # 130m at 1x is 2.7e9 tokens: over int4
    tokens_per_second: Mapped[float | None] = mapped_column(Float)
    device_seconds: Mapped[float | None] = mapped_column(Float)  # compute used (wall x devices)
    repro: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # versions, device, corpus hash, code version
    worker: Mapped[str | None] = mapped_column(String(200))
    # An external trial's lease (sweep_service.external): the holder is `worker`; NULL for Ray's trials.
    lease_expires_at: Mapped[datetime | None]
    optuna_trial: Mapped[int | None] = mapped_column(Integer)  # the trial's number in its cell's Optuna study
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    cell: Mapped[Cell] = relationship(back_populates="trials")


class CurvePoint(Base):
    __tablename__ = "curve_points"

    trial_id: Mapped[int] = mapped_column(ForeignKey("sweep_trials.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    eval_loss: Mapped[float | None] = mapped_column(Float)
    train_loss: Mapped[float | None] = mapped_column(Float)


class SuggestionRequest(Base):
    """The answer to one `POST /sweeps/{id}/suggestions` with an Idempotency-Key: a retry gets the same trials."""

    __tablename__ = "suggestion_requests"

    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
