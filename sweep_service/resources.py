"""Whether the Ray a sweep runs on can ever give one trial its `resources`.

A trial that asks for more than any node has waits in Ray Tune forever, with no message (issue 13:
`resources: {cpu: 64}` or `{gpu: 1}` on a laptop). Two cases:
- the local Ray we start (no RAY_ADDRESS) is this machine and never grows: such a spec is refused at
  submission (`local_problem`), and again when the engine starts, in case it was submitted elsewhere;
- an existing cluster (RAY_ADDRESS) may autoscale: the sweep runs, and until a trial starts its `error` field
  says "waiting for resources: ...", which `status` and GET /sweeps/{id} show.
"""

from __future__ import annotations

import os
from typing import Any

from db import repository as repo
from db.session import Database

WAITING = "waiting for resources: "


class ResourceError(ValueError):
    """One trial needs more than the local Ray can ever provide."""


def _fmt(amounts: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in amounts.items()) + "}"


def local_capacity(num_cpus: int | None, want_gpu: bool) -> dict[str, float]:
    """CPUs and GPUs of the local Ray we would start: SWEEP_RAY_NUM_CPUS or the CPUs this process may use
    (Ray counts the same), and the CUDA devices torch sees (asked only when a trial wants a GPU: torch import)."""
    cpus = num_cpus if num_cpus is not None else len(os.sched_getaffinity(0))
    gpus = 0
    if want_gpu:
        import torch

        gpus = torch.cuda.device_count()
    return {"cpu": float(cpus), "gpu": float(gpus)}


def shortfall(cpu: float, gpu: float, capacity: dict[str, float]) -> str | None:
    """What one trial asks for that `capacity` lacks, or None when it fits."""
    wanted = {"cpu": cpu, "gpu": gpu}
    short = {k: v for k, v in wanted.items() if v > capacity.get(k, 0.0)}
    if not short:
        return None
    return f"{_fmt(short)} per trial; there is {_fmt({k: capacity.get(k, 0.0) for k in wanted})}"


def local_problem(cpu: float, gpu: float, num_cpus: int | None) -> str | None:
    """Why the local Ray could never run one trial, for the `resources` field; None when it can."""
    missing = shortfall(cpu, gpu, local_capacity(num_cpus, gpu > 0))
    if missing is None:
        return None
    return f"this machine's Ray can never run a trial: {missing}"


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
