"""Use cases of operations: is the database reachable (the health check), and the counts the metrics show
(trials and sweeps by status, the queue's depth). Functions over a `Database` returning plain values; the REST
router (api/routers/ops.py) renders them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from db import queries
from db.models import SWEEP_STATUSES, TRIAL_STATUSES
from db.session import Database


@dataclass(frozen=True)
class Counts:
    trials: dict[str, int]  # every trial status (db.models.TRIAL_STATUSES, in order) -> trials in it, all sweeps
    sweeps: dict[str, int]  # every sweep status (db.models.SWEEP_STATUSES, in order) -> sweeps in it
    queued: int  # sweeps waiting for a dispatcher (queued and not imported)


def database_error(db: Database) -> str | None:
    """None when the database answers a trivial query; else the error's class name (never its text, which may
    hold the URL and its password)."""
    try:
        with db.session() as s:
            queries.ping(s)
    except SQLAlchemyError as exc:
        return type(exc).__name__
    return None


def counts(db: Database) -> Counts:
    with db.session() as s:
        trials = queries.trials_by_status(s)
        sweeps = queries.sweeps_by_status(s)
        queued = queries.queue_depth(s)
    return Counts(
        trials={k: trials.get(k, 0) for k in TRIAL_STATUSES},
        sweeps={k: sweeps.get(k, 0) for k in SWEEP_STATUSES},
        queued=queued,
    )
