"""External sweeps (`executor: external`): outside workers pull leased trials and report their results.

The planning is the engine's own (sweep_service.engine.SweepDriver: cells, phases, coordinate descent rounds,
budget, seeds, tolerance, the Optuna mirror), so an external sweep makes the same decisions as an in-process
one on the same results; only the execution differs. Instead of Ray Tune asking `next_trial`, a worker asks
for suggestions (`suggest`): pending trials are leased to it for `SWEEP_TRIAL_LEASE_SECONDS`, extended by its
heartbeats (`heartbeat`); its curve comes through `report` and its result through `complete`. A lease that runs
out puts the trial back to pending (db.trial_leases.expire) to be suggested again; the late worker's writes
are refused (Conflict, HTTP 409), and a repeat of the same result is accepted once (idempotent).

The paper's divergence rule (workers.trainer.DivergenceRule, PAPER.md section 4 step 2) judges reported
losses as it judges our trainer's: a reported point that breaks it ends the trial as diverged.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db import repository as repo
from db import trial_leases as leases
from db.models import SWEEP_TERMINAL, TRIAL_ENDED, TRIAL_TERMINAL
from db.records import CellRecord, TrialRecord
from db.session import Database
from sweep_service.engine import OPEN_CELL, SweepDriver, read_cell
from sweep_service.spec import Space

TRIAL_OUTCOMES = TRIAL_ENDED  # what a worker may report


class NotFound(LookupError):
    """No such sweep or trial (HTTP 404)."""


class Conflict(RuntimeError):
    """The request does not fit the sweep's or the trial's state: not an external sweep, or a lease that is no
    longer this worker's (HTTP 409)."""


@dataclass(frozen=True)
class LeasedTrial:
    id: int
    cell: str
    optimizer: str
    scale: str
    chinchilla: float
    config: dict[str, Any]
    seed: int
    round: int
    lease_expires_at: datetime
    lease_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "cell": self.cell,
            "optimizer": self.optimizer,
            "scale": self.scale,
            "chinchilla": self.chinchilla,
            "config": self.config,
            "seed": self.seed,
            "round": self.round,
            "lease_expires_at": self.lease_expires_at.isoformat() + "Z",
            "lease_seconds": self.lease_seconds,  # heartbeat within this (clocks need not agree)
        }


@dataclass(frozen=True)
class Outcome:
    """What a trial ended as, after the divergence rule."""

    trial_id: int
    status: str
    final_loss: float | None
    reason: str | None


class ExternalDriver(SweepDriver):
    """The engine's planner for a sweep that outside workers run."""

    def _steps_for(self, cell: CellRecord) -> Callable[[dict[str, Any]], int]:
        if cell.scale in self.plan.scale_params:
            # A custom scale's trainer is the user's: its step count is unknown, so no warmup is pruned as
            # longer than the run (sweep_service.coordinate_descent treats None as "unknown").
            return lambda config: None  # type: ignore[return-value]
        return super()._steps_for(cell)

    def finish_if_done(self) -> bool:
        """Close the sweep once no cell is open and nothing is pending or running; True when it is closed."""
        with self.db.session() as s:
            sweep = repo.get_sweep(s, self.sweep_id)
            if sweep is None or sweep.status in SWEEP_TERMINAL:
                return True
            cells = repo.cells_of(s, self.sweep_id)
            if any(c.status in OPEN_CELL for c in cells):
                return False
            if repo.trials_of_sweep(s, self.sweep_id, ["pending", "running"]):
                return False
            failed = all(c.best_loss is None for c in cells)
            repo.set_sweep_status(
                s,
                self.sweep_id,
                ["queued", "running"],
                "failed" if failed else "completed",
                error="no cell produced a finite loss" if failed else None,
            )
            return True


# One planner per sweep and database in this process, so that planning and recording are serialized by its lock
# (the database's compare-and-set updates guard against other processes).
_DRIVERS: dict[tuple[str, int], ExternalDriver] = {}
_DRIVERS_LOCK = threading.Lock()


def _driver(db: Database, sweep_id: int) -> ExternalDriver:
    with db.session() as s:
        sweep = repo.get_sweep(s, sweep_id)
        if sweep is None:
            with _DRIVERS_LOCK:
                _DRIVERS.pop((db.url, sweep_id), None)  # deleted: nothing left to plan
            raise NotFound(f"no sweep {sweep_id}")
        if sweep.executor != "external":
            raise Conflict(
                f"sweep {sweep_id} is run by a dispatcher (executor: {sweep.executor}), not by outside workers"
            )
        terminal = sweep.status in SWEEP_TERMINAL
    with _DRIVERS_LOCK:
        if terminal:
            # A sweep that will not run again plans nothing more (suggest hands out nothing, a late report is
            # refused by the trial's lease): its planner is dropped, so that a server that runs for months
            # does not keep one per sweep it ever served; a passing call gets a throwaway one.
            _DRIVERS.pop((db.url, sweep_id), None)
            return ExternalDriver(db, sweep_id)
        driver = _DRIVERS.get((db.url, sweep_id))
        if driver is None or driver.db is not db:
            driver = ExternalDriver(db, sweep_id)
            _DRIVERS[(db.url, sweep_id)] = driver
        return driver


def _leased(trial: TrialRecord, cell: CellRecord, lease_seconds: float) -> LeasedTrial:
    assert trial.lease_expires_at is not None
    return LeasedTrial(
        id=trial.id,
        cell=cell.key,
        optimizer=cell.optimizer,
        scale=cell.scale,
        chinchilla=cell.chinchilla,
        config=dict(trial.config),
        seed=trial.seed,
        round=trial.round,
        lease_expires_at=trial.lease_expires_at,
        lease_seconds=lease_seconds,
    )


def suggest(
    db: Database, sweep_id: int, worker: str, count: int, lease_seconds: float, key: str | None = None
) -> dict[str, Any]:
    """Lease up to `count` runnable trials to `worker`: {"trials": [...], "done": bool}. Nothing from a cell's
    next coordinate-descent round is runnable until its current round has finished, so the list may be empty
    while other workers run trials; "done" is true once the sweep is closed. With `key`, the first answer is
    stored and a repeat returns it."""
    if key is not None:
        with db.session() as s:
            stored = leases.stored_answer(s, sweep_id, key)
        if stored is not None:
            return stored
    driver = _driver(db, sweep_id)
    with driver.lock:
        with db.session() as s:
            started = repo.set_sweep_status(s, sweep_id, ["queued"], "running")
        if started:
            driver.prepare()  # the cells and their Optuna studies; nothing is running yet
        with db.session() as s:
            sweep = repo.get_sweep(s, sweep_id)
            closed = sweep is None or sweep.status in SWEEP_TERMINAL
            paused = sweep is not None and sweep.status == "paused"  # nothing to lease until it is resumed
            if not closed:
                leases.expire(s, sweep_id)
        taken: list[LeasedTrial] = []
        if not closed and not paused:
            driver.refresh()
            with db.session() as s:
                for pending in repo.trials_of_sweep(s, sweep_id, ["pending"]):
                    if len(taken) >= count:
                        break
                    if leases.take(s, pending.id, worker, lease_seconds):
                        trial = repo.get_trial(s, pending.id)  # as taken: running, with its lease
                        assert trial is not None
                        taken.append(_leased(trial, read_cell(s, trial.cell_id), lease_seconds))
            closed = not taken and driver.finish_if_done()
    answer = {"trials": [t.to_dict() for t in taken], "done": closed}
    if key is not None and taken:
        # Only answers that leased something are kept: a retry of an empty answer leases nothing twice, and idle
        # workers polling with fresh keys do not grow the table.
        with db.session() as s:
            answer = leases.store_answer(s, sweep_id, key, answer)
    return answer


def _trial_driver(db: Database, trial_id: int) -> ExternalDriver:
    with db.session() as s:
        trial = repo.get_trial(s, trial_id)
        if trial is None:
            raise NotFound(f"no trial {trial_id}")
        sweep_id = trial.sweep_id
    return _driver(db, sweep_id)


def _not_held(trial: TrialRecord, worker: str) -> Conflict:
    if trial.status == "running" and trial.worker != worker:
        return Conflict(f"trial {trial.id}'s lease is held by another worker now (it expired and was handed on)")
    return Conflict(f"trial {trial.id} is {trial.status}, not leased to {worker!r}")


def heartbeat(db: Database, trial_id: int, worker: str, lease_seconds: float) -> datetime:
    """Extend `worker`'s lease on the trial; returns the new expiry."""
    driver = _trial_driver(db, trial_id)
    with driver.lock, db.session() as s:
        until = leases.extend(s, trial_id, worker, lease_seconds)
        if until is None:
            trial = repo.get_trial(s, trial_id)
            assert trial is not None
            raise _not_held(trial, worker)
        return until


def _rule(driver: SweepDriver) -> Any:
    from workers.trainer import DivergenceRule  # torch: imported when a result arrives, not at module import

    plan = driver.plan
    return DivergenceRule(max_loss=plan.max_loss, late_loss=plan.late_loss, late_step=plan.late_step)


def report(db: Database, trial_id: int, worker: str, points: Sequence[tuple[int, float]]) -> Outcome | None:
    """Append (step, loss) points to the trial's curve. A point that breaks the divergence rule ends the trial
    as diverged (the returned Outcome: the worker should stop); None while it runs on."""
    driver = _trial_driver(db, trial_id)
    rule = _rule(driver)
    with driver.lock, db.session() as s:
        trial = repo.get_trial(s, trial_id)
        assert trial is not None
        if not leases.holds(s, trial_id, worker):
            raise _not_held(trial, worker)
        repo.add_curve_points(
            s, trial_id, [(step, loss if math.isfinite(loss) else None, None) for step, loss in points]
        )
        problem = next((p for p in (rule.check(step, loss) for step, loss in points) if p), None)
    if problem is None:
        return None
    return _record(driver, trial_id, worker, "diverged", None, problem, last_step=max(step for step, _ in points))


def complete(
    db: Database,
    trial_id: int,
    worker: str,
    final_loss: float | None = None,
    status: str | None = None,
    reason: str | None = None,
) -> Outcome:
    """Record the trial's result: a final loss (judged by the divergence rule), or a status "diverged" or
    "failed" with a reason. A repeat of the same result by the same worker returns the recorded outcome."""
    driver = _trial_driver(db, trial_id)
    rule = _rule(driver)
    with driver.lock, db.session() as s:
        trial = repo.get_trial(s, trial_id)
        assert trial is not None
        steps = [p.step for p in repo.curve(s, trial_id)]
        last_step = max(steps, default=0)
        if final_loss is not None:
            problem = rule.check(last_step, float(final_loss))
            to, loss, why = ("diverged", None, problem) if problem else ("completed", float(final_loss), None)
        else:
            assert status in ("diverged", "failed")
            to, loss, why = status, None, reason or status
        if trial.status in TRIAL_TERMINAL:
            if trial.worker == worker and trial.status == to and trial.final_loss == loss:
                return Outcome(trial.id, trial.status, trial.final_loss, trial.reason)
            raise _not_held(trial, worker)
    return _record(driver, trial_id, worker, to, loss, why, last_step)


def _record(
    driver: ExternalDriver, trial_id: int, worker: str, to: str, loss: float | None, why: str | None, last_step: int
) -> Outcome:
    db = driver.db
    with driver.lock:
        with db.session() as s:
            trial = repo.get_trial(s, trial_id)
            assert trial is not None
            fields: dict[str, Any] = {"final_loss": loss, "reason": why, "steps": last_step or None}
            if not leases.finish(s, trial_id, worker, to, **fields):
                raise _not_held(trial, worker)
            cell = read_cell(s, trial.cell_id)
            space = Space.from_dict(cell.space)
        # After the commit, as the engine does (SweepDriver.record_final): the row is the record, the Optuna
        # study its mirror.
        driver._tell_optuna(cell, space, trial, loss if loss is not None else math.inf)
        driver.refresh()
        driver.finish_if_done()
    return Outcome(trial_id, to, loss, why)
