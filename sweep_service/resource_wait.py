"""The engine's side of sweep_service/resources.py: once Ray is up, a local Ray too small for one trial fails
the sweep, and a cluster too small for now marks it "waiting for resources: ..." until a trial starts."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from db import repository as repo
from db.retry import retry, transient
from sweep_service.resources import WAITING, ResourceError, shortfall

# A session for the run's writes: the engine passes its driver's fenced one (SweepDriver._write), so a holder
# that lost the sweep's lease writes nothing; tests pass Database.session.
Writer = Callable[[], contextlib.AbstractContextManager[Session]]

log = logging.getLogger(__name__)


def _cluster_capacity() -> dict[str, float]:
    """The largest CPU and GPU count of any one live node (a trial runs on one node)."""
    import ray

    best = {"cpu": 0.0, "gpu": 0.0}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        best["cpu"] = max(best["cpu"], float(res.get("CPU", 0.0)))
        best["gpu"] = max(best["gpu"], float(res.get("GPU", 0.0)))
    return best


def check_started(write: Writer, sweep_id: int, cpu: float, gpu: float, local: bool) -> None:
    """The engine's hook, once Ray is up: a local Ray too small fails the sweep (ResourceError); a cluster too
    small for now marks the sweep as waiting, until a trial starts (ClearWaiting). Written through the driver's
    fenced session (a superseded holder writes nothing) and retried over a database outage."""
    missing = shortfall(cpu, gpu, _cluster_capacity())
    if missing is None:
        return
    if local:
        message = f"resources: this machine's Ray can never run a trial: {missing}"

        def fail() -> None:
            with write() as s:
                repo.set_sweep_status(s, sweep_id, ["queued", "running"], "failed", error=message)

        retry(fail, f"sweep {sweep_id}: resources")
        raise ResourceError(message)

    def wait() -> None:
        with write() as s:
            repo.set_sweep_error(s, sweep_id, WAITING + missing)

    retry(wait, f"sweep {sweep_id}: resources")


def clear_waiting(write: Writer, sweep_id: int) -> None:
    with write() as s:
        repo.set_sweep_error(s, sweep_id, None, only_if_prefix=WAITING)


def _callback_base() -> type:
    from ray import tune

    return tune.Callback


class ClearWaiting(_callback_base()):  # type: ignore[misc]
    """Clears the "waiting for resources" note when a trial starts (Ray gave it its resources). Holds only the
    sweep id: Tune pickles its callbacks, and the live database handle is the engine's driver's."""

    def __init__(self, sweep_id: int) -> None:
        self.sweep_id = sweep_id
        self.cleared = False

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if self.cleared:
            return
        from sweep_service.engine import _DRIVERS

        driver = _DRIVERS.get(self.sweep_id)
        if driver is None:
            return
        try:
            clear_waiting(driver._write, self.sweep_id)
        except Exception as exc:  # a note only: never fail a Tune callback over it (a later trial retries)
            if not transient(exc):
                raise
            log.warning("sweep %s: could not clear the 'waiting for resources' note: %s", self.sweep_id, exc)
            return
        self.cleared = True
