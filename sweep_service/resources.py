"""Whether the Ray a sweep runs on can ever give one trial its `resources`.

A trial that asks for more than any node has waits in Ray Tune forever, with no message (issue 13:
`resources: {cpu: 64}` or `{gpu: 1}` on a laptop). Two cases:
- the local Ray we start (no RAY_ADDRESS) is this machine and never grows: such a spec is refused at
  submission (`local_problem`), and again when the engine starts, in case it was submitted elsewhere;
- an existing cluster (RAY_ADDRESS) may autoscale: the sweep runs, and until a trial starts its `error` field
  says "waiting for resources: ...", which `status` and GET /sweeps/{id} show (sweep_service/resource_wait.py,
  the engine's side: it imports Ray, which the API does not).
"""

from __future__ import annotations

import os

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
