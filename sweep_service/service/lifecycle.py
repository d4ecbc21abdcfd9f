"""Use cases on sweeps: cancel, pause, resume, delete, update. Each is a function over a `Database` that returns a
plain dataclass or raises one of the errors below; the REST routers (api/routers/sweeps.py) and the CLI only
parse, call and render (DESIGN.md, "Inside sweep_service/").

Every state change is a compare-and-set in db.repository, so two callers racing on a sweep (a user pausing it
while a dispatcher claims it) cannot both win.

Pause works like SIGINT on the dispatcher (sweep_service/signals.py), from the outside: the sweep's status
becomes `paused`, its trials in flight go back to `pending`, and its lease epoch is bumped, so the run that held
it fails its next fenced write or heartbeat (sweep_service/lease.py), stops its Ray Tune run and writes nothing
more. No dispatcher claims a paused sweep (db.repository.claimable_sweep_ids takes only queued and abandoned
running ones); resume makes it `queued` again, and the next claim resumes it from its rows.

Update: the name applies at once. `budget` and `max_concurrent` are stored in the sweep's spec; a run reads its
plan from the spec when it starts (Ray Tune fixes the concurrency of a run at its start), so for a running sweep
they apply at its next start: pause and resume it to apply them now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from db import queries
from db import repository as repo
from db.models import SWEEP_TERMINAL
from db.session import Database
from sweep_service.service.errors import Conflict, Invalid, NotFound

# Statuses from which each use case may move a sweep.
CANCELLABLE = ("queued", "running", "paused")
PAUSABLE = ("queued", "running")
DELETABLE = ("queued", "paused", "completed", "failed", "cancelled")  # not running: cancel or pause it first
CANCEL_REASON = "cancelled through the API"
PAUSE_REASON = "paused"
# The spec's own bounds (sweep_service/spec.py, SweepSpec.budget and .max_concurrent); name: sweeps.name String(200).
NAME_MAX = 200
BUDGET_RANGE = (1, 100_000)
MAX_CONCURRENT_RANGE = (1, 10_000)


@dataclass(frozen=True)
class SweepState:
    id: int
    name: str
    status: str


@dataclass(frozen=True)
class Deleted:
    id: int
    cells: int
    trials: int
    studies: int


def _state(db: Database, sweep_id: int) -> SweepState:
    with db.session() as s:
        sweep = repo.get_sweep(s, sweep_id)
        if sweep is None:
            raise NotFound(f"no sweep {sweep_id}")
        return SweepState(sweep.id, sweep.name, sweep.status)


def cancel(db: Database, sweep_id: int, reason: str | None = None) -> SweepState:
    """Cancel a queued, running or paused sweep: its pending and running trials are cancelled with a reason.
    Cancelling a cancelled sweep is a no-op; a completed or failed one is a Conflict."""
    text = f"{CANCEL_REASON}: {reason}" if reason else CANCEL_REASON
    with db.session() as s:
        if repo.get_sweep(s, sweep_id) is None:
            raise NotFound(f"no sweep {sweep_id}")
        if repo.set_sweep_status(s, sweep_id, list(CANCELLABLE), "cancelled", error=None):
            repo.cancel_unfinished(s, sweep_id, text)
            queries.cancel_open_cells(s, sweep_id)
    state = _state(db, sweep_id)
    if state.status != "cancelled":
        raise Conflict(f"sweep {sweep_id} is already {state.status}")
    return state


def pause(db: Database, sweep_id: int) -> SweepState:
    """Stop a queued or running sweep resumably: status `paused`, trials in flight back to pending, and the run
    that held it fenced off (its lease epoch bumped). Pausing a paused sweep is a no-op; a finished one is a
    Conflict."""
    with db.session() as s:
        if repo.get_sweep(s, sweep_id) is None:
            raise NotFound(f"no sweep {sweep_id}")
        if repo.pause_sweep(s, sweep_id, list(PAUSABLE)):
            repo.requeue_running(s, sweep_id)
    state = _state(db, sweep_id)
    if state.status != "paused":
        raise Conflict(f"sweep {sweep_id} is {state.status}; only a queued or running sweep can be paused")
    return state


def resume(db: Database, sweep_id: int) -> SweepState:
    """Make a paused sweep claimable again (`queued`); the next dispatcher claim resumes it from its rows.
    Resuming a queued or running sweep is a no-op; a finished one is a Conflict."""
    with db.session() as s:
        if repo.get_sweep(s, sweep_id) is None:
            raise NotFound(f"no sweep {sweep_id}")
        repo.set_sweep_status(s, sweep_id, ["paused"], "queued")
    state = _state(db, sweep_id)
    if state.status not in ("queued", "running"):
        raise Conflict(f"sweep {sweep_id} is {state.status}; only a paused sweep can be resumed")
    return state


def delete(db: Database, sweep_id: int) -> Deleted:
    """Delete a sweep that is not running: its cells, trials, curve points and its cells' Optuna studies.
    A running sweep is a Conflict: cancel or pause it first."""
    with db.session() as s:
        keys = repo.delete_sweep(s, sweep_id, list(DELETABLE))
        if keys is None:
            sweep = repo.get_sweep(s, sweep_id)
            if sweep is None:
                raise NotFound(f"no sweep {sweep_id}")
            raise Conflict(f"sweep {sweep_id} is {sweep.status}; cancel or pause it before deleting it")
        cells, trials = keys
    studies = _delete_studies(db, sweep_id, cells)
    return Deleted(sweep_id, len(cells), trials, studies)


def _delete_studies(db: Database, sweep_id: int, cell_keys: list[str]) -> int:
    """The cells' Optuna studies (engine.study_name), in the same database (RDB storage); one already gone is
    skipped. Imported lazily: optuna is heavy and a sweep without cells has no study."""
    if not cell_keys:
        return 0
    import optuna

    from sweep_service.engine import optuna_storage, study_name

    storage = optuna_storage(db.url)
    names = {study.study_name for study in storage.get_all_studies()}
    deleted = 0
    for key in cell_keys:
        name = study_name(sweep_id, key)
        if name in names:
            optuna.delete_study(study_name=name, storage=storage)
            deleted += 1
    storage.remove_session()
    storage.engine.dispose()
    return deleted


def update(
    db: Database,
    sweep_id: int,
    name: str | None = None,
    budget: int | None = None,
    max_concurrent: int | None = None,
) -> SweepState:
    """Rename a sweep, or change its per-cell `budget` or its `max_concurrent` (stored in its spec; a running
    sweep applies them at its next start). Finished sweeps can be renamed only."""
    if name is not None and not (len(name.strip()) > 0 and len(name) <= NAME_MAX):
        raise Invalid("name", f"must be 1 to {NAME_MAX} characters, not blank")
    _check_range("budget", budget, BUDGET_RANGE)
    _check_range("max_concurrent", max_concurrent, MAX_CONCURRENT_RANGE)
    spec_changes: dict[str, Any] = {}
    if budget is not None:
        spec_changes["budget"] = budget
    if max_concurrent is not None:
        spec_changes["max_concurrent"] = max_concurrent
    with db.session() as s:
        sweep = repo.get_sweep(s, sweep_id)
        if sweep is None:
            raise NotFound(f"no sweep {sweep_id}")
        if spec_changes and sweep.status in SWEEP_TERMINAL:
            raise Conflict(f"sweep {sweep_id} is {sweep.status}; only its name can change")
        repo.update_sweep(s, sweep_id, name=name, spec_changes=spec_changes)
    return _state(db, sweep_id)


def _check_range(field: str, value: int | None, bounds: tuple[int, int]) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        raise Invalid(field, f"must be an integer from {bounds[0]} to {bounds[1]}")
