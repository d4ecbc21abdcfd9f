"""The engine's side of sweep_service/resources.py: once Ray is up, a local Ray too small for one trial fails
the sweep, and a cluster too small for now marks it "waiting for resources: ..." until a trial starts."""

from __future__ import annotations

from typing import Any

from db import repository as repo
from db.session import Database
from sweep_service.resources import WAITING, ResourceError, shortfall


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


def check_started(db: Database, sweep_id: int, cpu: float, gpu: float, local: bool) -> None:
    """The engine's hook, once Ray is up: a local Ray too small fails the sweep (ResourceError); a cluster too
    small for now marks the sweep as waiting, until a trial starts (ClearWaiting)."""
    missing = shortfall(cpu, gpu, _cluster_capacity())
    if missing is None:
        return
    if local:
        message = f"resources: this machine's Ray can never run a trial: {missing}"
        with db.session() as s:
            repo.set_sweep_status(s, sweep_id, ["queued", "running"], "failed", error=message)
        raise ResourceError(message)
    with db.session() as s:
        sweep = repo.get_sweep(s, sweep_id)
        if sweep is not None:
            sweep.error = WAITING + missing


def clear_waiting(db: Database, sweep_id: int) -> None:
    with db.session() as s:
        sweep = repo.get_sweep(s, sweep_id)
        if sweep is not None and sweep.error is not None and sweep.error.startswith(WAITING):
            sweep.error = None


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
        if driver is not None:
            clear_waiting(driver.db, self.sweep_id)
            self.cleared = True
