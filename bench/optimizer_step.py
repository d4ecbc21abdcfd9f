"""Optimizer step time, state memory and end-to-end throughput of every registered optimizer.

Baselines: torch.optim.AdamW with `fused=True` and with `foreach=True`, and, where one installs, the public
implementation of the same optimizer (a bench-only dependency, imported lazily): torch.optim.Muon on the hidden
matrices with torch AdamW (fused) on the rest ("Muon+AdamW"), and from pytorch-optimizer (PyPI
`pytorch-optimizer`, "po") Lion, MARS, SOAP, Kron, SCION, AdamMini and SophiaH. All are timed in the same
process as ours, their timing windows interleaved with ours (in alternating order) so that machine noise hits
each alike. The public optimizer gets our resolved hyperparameters wherever it has the same knob, and its
fastest path (foreach=True). pytorch-optimizer cannot block SOAP or Kron factors, so those two are compared on
extra rows where ours runs unblocked ("soap-unblocked", "kron-unblocked"); the plain "soap"/"kron" rows are what
the paper ran (256-blocked at the "paper" family's defaults), and "kron-p_min" is Kron's late phase, where the
preconditioner is updated once per 20 steps (p = 0.05, OPTIMIZERS.md 7.1: time both phases).

Protocol (OPTIMIZERS.md 7.1): a Llama of our family (default d=256, 4 layers, d_ff=4d, head dim 32, byte vocab:
4.3M parameters) with fixed synthetic gradients attached to its parameters (N(0, 1e-4^2): a global norm of
~0.2, under every clip threshold, so no optimizer rescales them); warm-up steps outside the timing; several
timing windows; the median per-step time. Each case runs in spawned processes: first the public
implementation alone (its time limit: "> limit" when its first step takes longer than --step-limit; its peak
memory and state; on CPU its address space is capped at half the RAM, so a runaway allocation fails as an
error; pytorch-optimizer's Kron is not run without opt_einsum, see the note it prints), then ours (peak memory and
state read during its warm-up, the first thing that process does) timed together with the public one and the
AdamW baselines. Window lengths adapt to --budget seconds per implementation and are whole multiples of its
periodic work (Kron at p_min: 20 steps).

Columns:
- ms/step: median over windows of the mean step time in the window. "/fused", "/foreach", "ours/pub": medians
  of the per-window ratios to the interleaved windows of AdamW fused, AdamW foreach and the public one.
- state B/P: optimizer-state bytes per parameter byte: sum of numel x element_size over the tensors in
  `optimizer.state` (lists and dicts inside it included, each tensor once), over all parameters and over the
  hidden matrices only ("mat"); "exp" is OPTIMIZERS.md 7.2's fp32 elements per matrix element for the same
  configuration (for mixes of d x d and d x 4d matrices: their parameter-weighted mean).
- peak MiB: CUDA: torch.cuda.max_memory_allocated() over the warm-up steps minus what was allocated before
  them (state + transients). CPU: torch's allocations are invisible to tracemalloc, so it is the process's peak
  resident set over the warm-up (VmHWM, reset just before it) minus the resident set before it: state,
  transients and a few MiB of allocator and library pages; "<=" marks an upper bound (the reset failed and
  the peak did not grow past the start-up peak).
- e2e: tokens/s of workers.trainer.train on --e2e-scale for --e2e-steps steps relative to AdamW, whose runs
  alternate with the others' (the baseline of each is the mean of the AdamW runs just before and after it).
  It includes Sophia's HVP steps and the first step's lazy initialisation.

Sophia-H: the step rows time the plain step. Its Hessian-vector product is timed separately as the extra cost
of one HVP training step (MATH attention, create_graph=True, the Hessian update) over a plain forward/backward
(and, for po.SophiaH, whose HVP runs inside step(), over its plain step), on --hvp-batch sequences, and
amortised over the update interval (10, Levanter's SophiaH default). The line "sophia (+HVP/k)" compares plain
step + amortised HVP. On CUDA the benchmark also runs at the 130m preset.

Prints the table, then the ratio lines, "worst ours/public ratio" last (target: <= 1 everywhere).

    python bench/optimizer_step.py [--optimizers muon,soap] [--quick] [--budget 30] [--width 256 --layers 4]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.metadata
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import subprocess
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from workers.data import builtin_corpus, train_batch
from workers.model import ModelConfig, Transformer, build_model, get_scale
from workers.optimizers import REGISTRY, HessianOptimizer, build, get_spec, resolve_hparams
from workers.optimizers.base import HParam, decay_param_groups, named_params_by_role
from workers.trainer import RunConfig, compute_gradients, resolve_device, train

GRAD_STD = 1e-4  # synthetic gradient scale: global norm ~0.2 at 4.3M params, below every max_grad_norm (1.0)
BASELINE_WARMUP = 10  # AdamW baseline steps before its first window
BASELINE_WINDOW = (5, 50)  # bounds on AdamW baseline steps per window (cheap steps; ~matched window wall time)
HVP_INTERVAL_FALLBACK = 10  # Levanter SophiaH update_interval (OPTIMIZERS.md 3.11), if the spec lacks one
UNBOUNDED_PERIOD = 10**9  # po.SophiaH update_period that never comes due during the plain-step timing
LATE_FLAT_START = -(10**6)  # Kron: p(t) = clip(exp(-0.001 (t - flat_start)), p_min, 1) = p_min from step 1

# Public implementations: registry name -> key of `build_public` (pytorch-optimizer class names from its docs).
PUBLIC = {
    "lion": "po.Lion",
    "mars": "po.MARS",
    "adam_mini": "po.AdamMini",
    "muon": "torch Muon+AdamW",
    "scion": "po.SCION",
    "soap": "po.SOAP",
    "kron": "po.Kron",
    "sophia": "po.SophiaH",
}


# --- what is measured -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One row: our optimizer `optimizer` with hyperparameter `overrides`, against `public` (a PUBLIC value)."""

    label: str
    optimizer: str
    overrides: dict[str, HParam] = field(default_factory=dict)
    public: str | None = None


@dataclass(frozen=True)
class Job:
    """One implementation measured in one child process."""

    cfg: ModelConfig
    device: str
    case: Case
    budget: float  # seconds for warm-up + timing windows of the implementation itself
    windows: int
    max_window_steps: int
    hvp_batch: int
    hvp_reps: int
    with_public: bool = False  # measure_timing: also time the public implementation, interleaved


@dataclass
class Measurement:
    ms: float = math.nan  # median per-step time
    fused_ms: float = math.nan
    foreach_ms: float = math.nan
    ratio_fused: float = math.nan  # median of per-window ratios to interleaved AdamW fused
    ratio_foreach: float = math.nan
    ratio_public: float = math.nan  # ours only: median of per-window ratios to the interleaved public windows
    state_all: float = math.nan  # optimizer-state bytes per parameter byte, all parameters
    state_matrix: float = math.nan  # the same over the hidden matrices
    outside_state_bytes: int = 0  # tensors the optimizer object holds outside .state (caches)
    peak_mib: float = math.nan
    peak_bounded: bool = False  # CPU: the peak RSS did not grow past the start-up peak ("<=")
    steps: str = ""  # "windows x steps"
    hvp_ms: float = math.nan  # Sophia: extra ms of one HVP step
    hvp_interval: int = 0
    first_step_s: float = math.nan
    limit_s: float = math.nan  # set when the first step exceeded the limit
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not math.isnan(self.ms)

    @property
    def ok_alone(self) -> bool:
        """A memory-only measurement that finished (state bytes read)."""
        return not math.isnan(self.state_all)


Report = Callable[[str, object], None]  # progress messages of a child process: ("ready" | "first", value)


# --- the model, the synthetic gradients and memory --------------------------------------------------------


def step_model_config(width: int, layers: int, family: str) -> ModelConfig:
    """A Llama of our family like the tiny presets (workers/model.py): d_ff = 4d, head dim 32, byte vocab, T 128."""
    return ModelConfig(width, layers, max(1, width // 32), 4 * width, 128, 256, family)


def attach_grads(model: torch.nn.Module, seed: int = 0) -> list[torch.Tensor]:
    """Attach fixed N(0, GRAD_STD^2) gradients; returns clean copies to restore them from."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    clean = []
    for p in model.parameters():
        g = (torch.randn(p.shape, generator=gen) * GRAD_STD).to(device=p.device, dtype=p.dtype)
        p.grad = g.clone()
        clean.append(g)
    return clean


@torch.no_grad()
def restore_grads(model: torch.nn.Module, clean: list[torch.Tensor]) -> bool:
    """Put the synthetic gradients back; returns True when a gradient had been changed (or replaced)."""
    changed = False
    for p, g in zip(model.parameters(), clean, strict=True):
        if p.grad is None or p.grad.shape != g.shape or p.grad.requires_grad:  # None, or a create_graph grad
            p.grad = g.clone()
            changed = True
        else:
            changed = changed or not torch.equal(p.grad, g)
            p.grad.copy_(g)
    return changed


def _tensors(value: object) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _tensors(v)


def _key(t: torch.Tensor) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    return (t.data_ptr(), tuple(t.shape), t.stride())


def state_bytes(optimizers: list[torch.optim.Optimizer], params: Sequence[torch.Tensor]) -> int:
    """Bytes of the distinct tensors in the optimizers' `state` entries of `params` (views of one stacked tensor
    count by their own size, so a parameter's share of stacked state is its own)."""
    wanted = {id(p) for p in params}
    seen: set[tuple[int, tuple[int, ...], tuple[int, ...]]] = set()
    total = 0
    for opt in optimizers:
        for p, st in opt.state.items():
            if id(p) not in wanted:
                continue
            for t in _tensors(st):
                if _key(t) not in seen:
                    seen.add(_key(t))
                    total += t.numel() * t.element_size()
    return total


def outside_state_bytes(optimizers: list[torch.optim.Optimizer], model: torch.nn.Module) -> int:
    """Bytes of tensors an optimizer object keeps outside `.state` and its param groups (caches, buffers)."""
    skip = {_key(t) for opt in optimizers for st in opt.state.values() for t in _tensors(st)}
    skip |= {_key(p) for p in model.parameters()}
    skip |= {_key(p.grad) for p in model.parameters() if p.grad is not None}
    seen: set[tuple[int, tuple[int, ...], tuple[int, ...]]] = set()
    total = 0
    for opt in optimizers:
        for name, value in vars(opt).items():
            if name in ("state", "param_groups", "defaults"):
                continue
            for t in _tensors(value):
                if _key(t) not in skip and _key(t) not in seen:
                    seen.add(_key(t))
                    total += t.numel() * t.element_size()
    return total


def _proc_status_kib(field_name: str) -> int | None:
    """A "kB" field of /proc/self/status (Linux), in KiB; None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_resident() -> bool:
    """Reset the kernel's peak-RSS mark of this process (VmHWM; `echo 5 > /proc/self/clear_refs`, Linux >= 4.0).

    Not ru_maxrss: that survives exec, so a child spawned by a big parent starts at the parent's RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def precision(device: torch.device) -> Iterator[None]:
    # the trainer's policy (workers/trainer.py _precision): bf16 autocast on CUDA, fp32 on CPU
    with torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext():
        yield


# --- the public implementations -----------------------------------------------------------------------------


def pytorch_optimizer() -> Any:
    """The pytorch-optimizer package (bench-only dependency), imported lazily; ImportError when missing."""
    return importlib.import_module("pytorch_optimizer")


@dataclass
class Impl:
    """A thing to time: `step()` and the optimizers whose state it keeps."""

    step: Callable[[], object]
    optimizers: list[torch.optim.Optimizer]
    hessian_period: Callable[[int], None] | None = None  # po.SophiaH: set its update_period


def build_public(key: str, model: Transformer, hp: dict[str, HParam]) -> Impl:
    """The public implementation `key` with our resolved hyperparameters `hp` where it has the same knob."""
    lr, wd = float(hp["lr"]), float(hp.get("wd", 0.0))
    b1, b2 = float(hp.get("beta1", 0.9)), float(hp.get("beta2", 0.95))
    roles = named_params_by_role(model)
    groups = decay_param_groups(model, wd)
    if key == "torch Muon+AdamW":
        matrices = [p for _, p in roles["matrix"]]
        rest = [
            {"params": [p for r in ("head",) for _, p in roles[r]], "weight_decay": wd},
            {"params": [p for r in ("embedding", "norm") for _, p in roles[r]], "weight_decay": 0.0},
        ]
        muon = torch.optim.Muon(
            matrices,
            lr=lr,
            weight_decay=wd,
            momentum=float(hp["momentum"]),
            nesterov=True,
            ns_steps=int(hp["backend_steps"]),  # ours runs backend_steps (10, Levanter MuonConfig)
        )
        adamw = torch.optim.AdamW(
            rest, lr=lr * float(hp["muon_to_adam_lr"]), betas=(b1, b2), eps=float(hp["eps"]), fused=True
        )

        def both() -> None:
            muon.step()
            adamw.step()

        return Impl(both, [muon, adamw])
    po = pytorch_optimizer()
    if key == "po.Lion":
        opt = po.Lion(groups, lr=lr, betas=(b1, b2), weight_decay=wd, foreach=True)
    elif key == "po.MARS":
        # optimize_1d=True: MARS on the 1-D gains too, as Levanter (OPTIMIZERS.md 3.5)
        opt = po.MARS(
            groups, lr=lr, betas=(b1, b2), gamma=float(hp["gamma"]), mars_type="adamw", optimize_1d=True,
            weight_decay=wd, eps=float(hp["eps"]), foreach=True,
        )  # fmt: skip
    elif key == "po.AdamMini":
        opt = po.AdamMini(
            model, lr=lr, betas=(b1, b2), weight_decay=wd, num_embeds=model.config.d_model,
            num_heads=model.config.n_heads, eps=float(hp["eps"]), foreach=True,
        )  # fmt: skip
    elif key == "po.SCION":
        LMONorm = importlib.import_module("pytorch_optimizer.optimizer.scion").LMONorm
        # Levanter's Scion: spectral (NS, backend_steps steps: workers/optimizers/scion.py) on hidden
        # matrices, sign on embedding and head; po's sign norm needs 2-D, so the gains get its RMS norm.
        opt = po.SCION(
            [
                {"params": [p for _, p in roles["matrix"]], "norm_type": LMONorm.SPECTRAL,
                 "norm_kwargs": {"num_steps": int(hp["backend_steps"])}, "weight_decay": wd},
                {"params": [p for _, p in roles["head"]], "norm_type": LMONorm.SIGN,
                 "norm_kwargs": {"normalize": False}, "weight_decay": wd},
                {"params": [p for _, p in roles["embedding"]], "norm_type": LMONorm.SIGN,
                 "norm_kwargs": {"normalize": False}, "weight_decay": 0.0},
                {"params": [p for _, p in roles["norm"]], "norm_type": LMONorm.BIAS, "weight_decay": 0.0},
            ],
            lr=lr, momentum=1.0 - float(hp["momentum"]), foreach=True,  # po's momentum: weight of the new grad
        )  # fmt: skip
    elif key == "po.SOAP":
        # precondition_1d=True: Levanter preconditions the gains as n x n (workers/optimizers/soap.py)
        opt = po.SOAP(
            groups, lr=lr, betas=(b1, b2), shampoo_beta=float(hp["shampoo_beta"]), weight_decay=wd,
            precondition_frequency=int(hp["precondition_frequency"]), max_precondition_dim=int(hp["max_precond_dim"]),
            precondition_1d=True, eps=float(hp["eps"]),
        )  # fmt: skip
    elif key == "po.Kron":
        # Update the preconditioner every step: ours is in its flat start (p = 1) throughout the timing.
        # max_size_triangular 25000 (Levanter, workers/optimizers/kron.py); vectors get diagonal factors in both.
        opt = po.Kron(
            groups, lr=lr, momentum=b1, weight_decay=wd, pre_conditioner_update_probability=1.0,
            max_size_triangular=25000, min_ndim_triangular=2,
        )  # fmt: skip
    elif key == "po.SophiaH":
        # po's p is its clip threshold on m / max(h, eps) (Levanter clips m / max(gamma h, eps) at 1): same cost.
        interval = int(hp.get("update_interval", HVP_INTERVAL_FALLBACK))
        sophia = po.SophiaH(
            groups, lr=lr, betas=(b1, b2), weight_decay=wd, update_period=interval, eps=float(hp["eps"]),
            foreach=True,
        )  # fmt: skip
        first = [True]

        def step() -> None:
            # Its first step is due for an HVP, which needs create_graph gradients: hand it a zero Hessian
            # instead (set_hessian, a copy), then never come due again during the plain-step timing.
            if first[0]:
                first[0] = False
                sophia.step(hessian=[torch.zeros_like(p) for g in sophia.param_groups for p in g["params"]])
                sophia.update_period = UNBOUNDED_PERIOD
            else:
                sophia.step()

        def set_period(period: int) -> None:
            sophia.update_period = period

        return Impl(step, [sophia], set_period)
    else:
        raise ValueError(f"unknown public implementation {key!r}; valid: {', '.join(PUBLIC.values())}")
    return Impl(opt.step, [opt])


# --- one implementation, in a child process ---------------------------------------------------------------


def _timed(fn: Callable[[], object], n: int, device: torch.device) -> float:
    """Mean seconds per call over `n` calls, bracketed by device synchronisation."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / n


def work_period(case: Case, hp: dict[str, HParam]) -> int:
    """Steps in one cycle of an optimizer's periodic work, so that warm-up and windows hold whole cycles."""
    if case.optimizer == "soap":
        return max(1, int(hp["precondition_frequency"]))
    if case.optimizer == "kron" and int(hp["update_prob_flat_start"]) <= LATE_FLAT_START:
        return max(1, round(1.0 / float(hp["preconditioner_update_probability"])))
    return 1


def warm_up(
    impl: Impl, model: Transformer, clean: list[torch.Tensor], job: Job, period: int, report: Report
) -> tuple[Measurement, float]:
    """First step (reported, for the time limit) and warm-up steps, with the peak-memory reading and the state
    bytes; returns them and the estimated seconds per step."""
    device = torch.device(job.device)
    out = Measurement()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_alloc = torch.cuda.memory_allocated(device)
    reset = reset_peak_resident()
    rss0, peak0 = _proc_status_kib("VmRSS"), _proc_status_kib("VmHWM")
    start = time.perf_counter()
    out.first_step_s = _timed(impl.step, 1, device)
    report("first", out.first_step_s)
    # At least one period (Kron at p_min updates once per 20 steps), then up to 20 steps or a quarter budget.
    warm: list[float] = []
    while len(warm) < period or (len(warm) < 20 and time.perf_counter() - start < job.budget / 4):
        warm.append(_timed(impl.step, 1, device))
    if device.type == "cuda":
        out.peak_mib = (torch.cuda.max_memory_allocated(device) - base_alloc) / 2**20
    else:
        peak1 = _proc_status_kib("VmHWM")
        if rss0 is not None and peak0 is not None and peak1 is not None:
            out.peak_mib = (peak1 - rss0) / 2**10
            out.peak_bounded = not reset and peak1 <= peak0  # no reset and no new peak: an upper bound
    if restore_grads(model, clean):
        out.notes.append("it changed the gradients in place (restored before every window)")
    params = list(model.parameters())
    matrices = [p for _, p in named_params_by_role(model)["matrix"]]
    out.state_all = state_bytes(impl.optimizers, params) / sum(p.numel() * p.element_size() for p in params)
    out.state_matrix = state_bytes(impl.optimizers, matrices) / sum(p.numel() * p.element_size() for p in matrices)
    out.outside_state_bytes = outside_state_bytes(impl.optimizers, model)
    per_step = statistics.fmean(warm) if period > 1 else statistics.median(warm)
    return out, per_step


def setup(job: Job, impl_key: str) -> tuple[Transformer, list[torch.Tensor], Impl, dict[str, HParam], int]:
    device = torch.device(job.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as workers/trainer.py
    torch.manual_seed(0)
    model = build_model(job.cfg, device)
    clean = attach_grads(model)
    hp = resolve_hparams(get_spec(job.case.optimizer), job.cfg.family, job.case.overrides)
    if impl_key == "ours":
        opt = build(job.case.optimizer, model, job.case.overrides)
        impl = Impl(opt.step, [opt])
    else:
        impl = build_public(impl_key, model, hp)
    return model, clean, impl, hp, work_period(job.case, hp)


def measure_memory(job: Job, report: Report) -> dict[str, Measurement]:
    """The public implementation alone in a fresh process: time limit, peak memory and state bytes."""
    assert job.case.public is not None
    model, clean, impl, _, period = setup(job, job.case.public)
    report("ready", None)
    out, _ = warm_up(impl, model, clean, job, period, report)
    return {"public": out}


def measure_timing(job: Job, report: Report) -> dict[str, Measurement]:
    """Ours (warm-up with peak memory and state bytes), the public implementation when `job.with_public`, and
    AdamW fused and foreach, their timing windows interleaved."""
    device = torch.device(job.device)
    model, clean, ours, hp, period = setup(job, "ours")
    report("ready", None)
    impls: dict[str, Impl] = {"ours": ours}
    results: dict[str, Measurement] = {}
    per_step: dict[str, float] = {}
    results["ours"], per_step["ours"] = warm_up(ours, model, clean, job, period, report)
    if job.with_public and job.case.public is not None:
        impls["public"] = build_public(job.case.public, model, hp)
        results["public"], per_step["public"] = warm_up(impls["public"], model, clean, job, period, lambda *_: None)
    params = list(model.parameters())
    impls["fused"] = Impl(torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1, fused=True).step, [])
    impls["foreach"] = Impl(torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1, foreach=True).step, [])
    for name in ("fused", "foreach"):
        _timed(impls[name].step, 1, device)
        per_step[name] = _timed(impls[name].step, BASELINE_WARMUP, device)

    # Window lengths: each optimizer's windows together take about the budget, in whole periods; the AdamW
    # windows about as long as ours, within BASELINE_WINDOW steps.
    steps = {}
    for name in ("ours", "public"):
        if name in impls:
            n = int(job.budget / (job.windows * max(per_step[name], 1e-6)))
            steps[name] = max(period, min(job.max_window_steps, n) // period * period)
    span = steps["ours"] * per_step["ours"]
    for name in ("fused", "foreach"):
        steps[name] = max(BASELINE_WINDOW[0], min(BASELINE_WINDOW[1], round(span / max(per_step[name], 1e-6))))
    times: dict[str, list[float]] = {name: [] for name in impls}
    for w in range(job.windows):
        order = list(impls) if w % 2 == 0 else list(reversed(impls))  # alternate, so that load trends cancel
        for name in order:
            restore_grads(model, clean)
            times[name].append(_timed(impls[name].step, steps[name], device))

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    for name in ("ours", "public"):
        if name in impls:
            m = results[name]
            m.steps = f"{job.windows}x{steps[name]}"
            m.ms = statistics.median(times[name]) * 1e3
            m.fused_ms = statistics.median(times["fused"]) * 1e3
            m.foreach_ms = statistics.median(times["foreach"]) * 1e3
            m.ratio_fused = ratio(name, "fused")
            m.ratio_foreach = ratio(name, "foreach")
    if "public" in impls:
        results["ours"].ratio_public = ratio("ours", "public")
    if job.case.optimizer == "sophia":
        interval = int(hp.get("update_interval", HVP_INTERVAL_FALLBACK))
        for name in ("ours", "public"):
            if name in impls:
                m = results[name]
                m.hvp_interval = interval
                try:
                    m.hvp_ms = hvp_cost(job, model, clean, impls[name], interval, m.ms / 1e3) * 1e3
                except RuntimeError as exc:  # out of memory at a large preset: report, keep the step timings
                    m.notes.append(f"HVP timing failed: {str(exc).splitlines()[0]}")
    return results


def hvp_cost(
    job: Job, model: Transformer, clean: list[torch.Tensor], impl: Impl, interval: int, step_s: float
) -> float:
    """Seconds one Hessian-vector-product step costs over a plain forward/backward (+ the plain step for po).

    Ours: workers.trainer.compute_gradients on a step where the optimizer asks for the HVP (MATH attention,
    create_graph=True, update_hessian) minus the same call through a non-Hessian optimizer. po.SophiaH: forward
    on MATH attention, backward(create_graph=True) and its step() on a due step (the HVP runs inside) minus the
    plain forward/backward and its plain step (`step_s`).
    """
    device = torch.device(job.device)
    x, y = train_batch(builtin_corpus(), 0, 0, job.hvp_batch, job.cfg.seq_len)
    x, y = x.to(device), y.to(device)
    opt = impl.optimizers[0]
    not_hessian = torch.optim.SGD(model.parameters(), lr=0.0)  # compute_gradients' plain path

    def clear() -> None:
        for p in model.parameters():
            p.grad = None

    def plain() -> None:
        clear()
        compute_gradients(model, not_hessian, x, y, job.hvp_batch, device)

    plain_s = [_timed(plain, 1, device) for _ in range(job.hvp_reps + 1)][1:]  # the first is warm-up
    hvp_s = []
    if isinstance(opt, HessianOptimizer):  # ours
        for _ in range(job.hvp_reps + 1):
            restore_grads(model, clean)
            while not opt.hessian_due():
                opt.step()
            clear()
            hvp_s.append(_timed(lambda: compute_gradients(model, opt, x, y, job.hvp_batch, device), 1, device))
            opt.step()
        extra = statistics.median(hvp_s[1:]) - statistics.median(plain_s)
    else:  # po.SophiaH
        assert impl.hessian_period is not None
        impl.hessian_period(interval)

        def hvp_step() -> None:
            with sdpa_kernel(SDPBackend.MATH), precision(device), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # backward(create_graph=True) warns about a reference cycle
                loss = model(x, y)
                loss.backward(create_graph=True)
            opt.step()

        for _ in range(job.hvp_reps + 1):
            restore_grads(model, clean)
            while opt.param_groups[0]["step"] % interval != 0:  # po: due when the step count before it is 0 mod k
                opt.step()
            clear()
            hvp_s.append(_timed(hvp_step, 1, device))
        impl.hessian_period(UNBOUNDED_PERIOD)
        extra = statistics.median(hvp_s[1:]) - statistics.median(plain_s) - step_s
    clear()
    restore_grads(model, clean)
    return extra


def _child(kind: str, job: Job, conn: Connection) -> None:
    if torch.device(job.device).type == "cpu":
        # A runaway allocation (po.Kron without opt_einsum asks for d^2 n^2 floats) must fail as an error in this
        # process, not wake the kernel's OOM killer on a shared machine: cap the address space at half the RAM.
        cap = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY or soft > cap:
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        fn = measure_memory if kind == "memory" else measure_timing
        conn.send(("result", fn(job, lambda what, value: conn.send((what, value)))))
    except Exception as exc:  # report, never hang the parent
        msg = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        conn.send(("error", msg if isinstance(exc, ImportError) else traceback.format_exc()))
    finally:
        conn.close()


def run_child(kind: str, job: Job, step_limit: float) -> dict[str, Measurement]:
    """`measure_memory` or `measure_timing` in a spawned process. A first step slower than `step_limit` seconds
    stops it; the result then has only "error" notes, or `limit_s` set."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: no inherited thread pools, a clean peak RSS
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(kind, job, sender), daemon=True)
    proc.start()
    sender.close()
    failed = Measurement()
    period = work_period(job.case, resolve_hparams(get_spec(job.case.optimizer), job.cfg.family, job.case.overrides))
    deadline = time.monotonic() + 600.0  # imports and model set-up on a loaded machine
    try:
        while True:
            wait = deadline - time.monotonic()
            if wait <= 0 or not receiver.poll(wait):
                failed.limit_s = step_limit
                failed.notes.append(f"no step finished within {step_limit:.0f} s; stopped")
                break
            what, value = receiver.recv()
            if what == "ready":
                deadline = time.monotonic() + step_limit
            elif what == "first":
                first = float(value)
                if first > step_limit:
                    failed.limit_s = step_limit
                    failed.notes.append(f"first step took {first:.0f} s > limit {step_limit:.0f} s; stopped")
                    break
                # a hang guard for the rest: warm-ups and windows take about the budget per implementation, or
                # a few whole periods of slow steps; then the baselines and Sophia's HVP timing
                deadline = time.monotonic() + 4 * job.budget + 4 * (job.windows + 5) * period * first + 600
            elif what == "result":
                return dict(value)
            else:
                failed.notes.append(f"failed: {value}")
                break
    except EOFError:
        failed.notes.append(f"the measuring process died (exit code {proc.exitcode})")
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        receiver.close()
    return {"error": failed}


def measure_case(job: Job, step_limit: float, with_public: bool) -> tuple[Measurement, Measurement | None]:
    """Ours and (when asked and the case has one) the public implementation: the public one first alone (time
    limit, peak memory, state), then both interleaved with the AdamW baselines in one process."""
    pub_mem: Measurement | None = None
    if with_public and job.case.public is not None:
        alone = run_child("memory", job, step_limit)
        pub_mem = alone.get("public", alone.get("error"))
    timing = run_child(
        "timing", dataclasses.replace(job, with_public=pub_mem is not None and pub_mem.ok_alone), step_limit
    )
    ours = timing.get("ours", timing.get("error", Measurement()))
    if pub_mem is None:
        return ours, None
    pub = timing.get("public")
    if pub is not None:  # memory readings from its own process, timings from the interleaved one
        for name in ("state_all", "state_matrix", "outside_state_bytes", "peak_mib", "peak_bounded", "notes"):
            setattr(pub, name, getattr(pub_mem, name))
        return ours, pub
    return ours, pub_mem


# --- end to end ---------------------------------------------------------------------------------------------


def e2e_tokens_per_second(optimizer: str, scale: str, steps: int, device: str) -> tuple[float, str]:
    """workers.trainer.train tokens/s (training steps only) for `steps` steps; and the run's status."""
    cfg = get_scale(scale)
    result = train(
        RunConfig(
            scale=scale,
            optimizer=optimizer,
            chinchilla=1.0,  # the schedule is irrelevant to speed; max_steps cuts the run
            max_steps=steps,
            eval_every=10**9,  # only the final evaluation, which tokens/s excludes
            eval_sequences=cfg.seq_len,
            device=device,
        )
    )
    return result.tokens_per_second, result.status


def end_to_end(names: list[str], scale: str, steps: int, device: str) -> dict[str, float]:
    """tokens/s of each optimizer relative to AdamW runs on either side of it (adamw, a, adamw, b, adamw, ...),
    so that a change of machine load during the sequence affects the optimizer and its baseline alike."""
    e2e_tokens_per_second("adamw", scale, 5, device)  # warm-up (allocator, kernels)
    adamw = [e2e_tokens_per_second("adamw", scale, steps, device)[0]]
    raw: dict[str, float] = {}
    ratios: dict[str, float] = {"adamw": 1.0}
    for name in names:
        if name == "adamw":
            continue
        raw[name], status = e2e_tokens_per_second(name, scale, steps, device)
        if status != "completed":
            print(f"note: e2e {name} {status}")
        adamw.append(e2e_tokens_per_second("adamw", scale, steps, device)[0])
        ratios[name] = raw[name] / statistics.fmean(adamw[-2:])
    raw["adamw"] = statistics.median(adamw)
    print(
        f"e2e: {scale}, {steps} steps per run; AdamW {raw['adamw']:,.0f} tok/s (median of {len(adamw)} runs, "
        f"{min(adamw):,.0f} to {max(adamw):,.0f})"
    )
    print("e2e tok/s: " + ", ".join(f"{n} {raw[n]:,.0f}" for n in names))
    return ratios


# --- expectations (OPTIMIZERS.md 7.2) -----------------------------------------------------------------------


def expected_matrix_state(case: Case, cfg: ModelConfig, hp: dict[str, HParam]) -> float | None:
    """fp32 state elements per element of the hidden matrices, from OPTIMIZERS.md 7.2, for this configuration."""
    d, ff = cfg.d_model, cfg.d_ff
    name = case.optimizer
    simple = {"adamw": 2.0, "nadamw": 2.0, "cautious": 2.0, "lion": 1.0, "mars": 3.0, "sophia": 2.0}
    simple |= {"muon": 1.0, "scion": 1.0, "adamh": 2.0, "muonh": 1.0}  # Hyperball: base state + 1 scalar R
    if name in simple:
        return simple[name]
    if name == "adam_mini":
        return 1.0  # m full, v per block (7.2 "official": ~1; ours stores v per block too)
    counts = (4 * d * d, 3 * d * ff)  # per layer: attention d x d, SwiGLU d x 4d (weights of the mean)
    if name == "soap":
        blocked = bool(hp["partition_grads_into_blocks"])
        if blocked and d % int(hp["block_size"]) == 0 and ff % int(hp["block_size"]) == 0:
            return 6.0  # b x b blocks: m, v + L, R, Q_L, Q_R per block
        # unblocked: 2 + (d^2 + n^2) * 2 / (d n) for a d x n matrix (7.2: 6 for d x d, 10.5 for d x 4d)
        per = (6.0, 2.0 + 2.0 * (d * d + ff * ff) / (d * ff))
    elif name == "kron":
        blocked = bool(hp["partition_grads_into_blocks"])
        if blocked and d % int(hp["block_size"]) == 0 and ff % int(hp["block_size"]) == 0:
            return 3.0  # m + 2 factors per b x b block
        per = (3.0, 1.0 + (d * d + ff * ff) / (d * ff))  # 7.2 dense triangular: 3 and 5.25
    else:
        return None
    return (counts[0] * per[0] + counts[1] * per[1]) / sum(counts)


# --- the report ---------------------------------------------------------------------------------------------


def fmt(x: float, spec: str = ".2f", width: int = 0) -> str:
    s = "-" if math.isnan(x) else format(x, spec)
    return s.rjust(width) if width else s


def build_cases(names: list[str]) -> list[Case]:
    cases = []
    for name in names:
        if name == "soap":
            cases.append(Case("soap", "soap"))
            cases.append(Case("soap-unblocked", "soap", {"partition_grads_into_blocks": False}, PUBLIC["soap"]))
        elif name == "kron":
            cases.append(Case("kron", "kron"))
            cases.append(Case("kron-unblocked", "kron", {"partition_grads_into_blocks": False}, PUBLIC["kron"]))
            cases.append(Case("kron-p_min", "kron", {"update_prob_flat_start": LATE_FLAT_START}))
        else:
            cases.append(Case(name, name, {}, PUBLIC.get(name)))
    return cases


def print_table(
    title: str,
    cfg: ModelConfig,
    cases: list[Case],
    ours: dict[str, Measurement],
    public: dict[str, Measurement],
    e2e: dict[str, float],
) -> None:
    n_params = sum(p.numel() for p in build_model(cfg, "meta").parameters())
    print(f"\n== {title}: d={cfg.d_model}, {cfg.n_layers} layers, d_ff={cfg.d_ff}, vocab {cfg.vocab_size}, "
          f"{n_params / 1e6:.2f}M parameters, family {cfg.family!r} hyperparameters ==")  # fmt: skip
    head = (
        f"{'optimizer':<15}{'ms/step':>9}{'/fused':>7}{'/foreach':>9}  {'public':<17}{'pub ms':>9}{'ours/pub':>9}"
        f"{'state':>7}{'mat':>6}{'exp':>6}{'pub mat':>8}{'peak MiB':>10}{'pub MiB':>9}{'e2e':>6}"
    )
    print(head)
    print("-" * len(head))
    for case in cases:
        m = ours[case.label]
        pub = public.get(case.label)
        hp = resolve_hparams(get_spec(case.optimizer), cfg.family, case.overrides)
        exp = expected_matrix_state(case, cfg, hp)
        ms = fmt(m.ms, ".1f") if m.ok else (f">{m.limit_s:.0f}s" if not math.isnan(m.limit_s) else "fail")
        if pub is None:
            pub_name, pub_ms, ratio, pub_mat, pub_peak = "", "", "", "", ""
        else:
            pub_name = case.public or ""
            if pub.ok:
                pub_ms, ratio = fmt(pub.ms, ".1f"), fmt(m.ratio_public)
            elif not math.isnan(pub.limit_s):
                pub_ms, ratio = f">{pub.limit_s:.0f}s", "<" + fmt(m.ms / (pub.limit_s * 1e3), ".3f")
            else:
                pub_ms, ratio = "n/a", "-"
            pub_mat = fmt(pub.state_matrix)
            pub_peak = fmt(pub.peak_mib, ".0f")
        peak = ("<=" if m.peak_bounded else "") + fmt(m.peak_mib, ".0f")
        print(
            f"{case.label:<15}{ms:>9}{fmt(m.ratio_fused, width=7)}{fmt(m.ratio_foreach, width=9)}  {pub_name:<17}"
            f"{pub_ms:>9}{ratio:>9}{fmt(m.state_all, width=7)}{fmt(m.state_matrix, width=6)}"
            f"{fmt(exp if exp is not None else math.nan, width=6)}{pub_mat:>8}{peak:>10}{pub_peak:>9}"
            f"{fmt(e2e.get(case.label, math.nan), width=6)}"
        )


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", default="", help="comma-separated registry names (default: all)")
    parser.add_argument("--quick", action="store_true", help="short budgets, 3 windows, 20 e2e steps")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--family", default="paper", choices=("paper", "tiny"), help="hyperparameter defaults")
    parser.add_argument("--budget", type=float, default=None, help="seconds per implementation (default 30)")
    parser.add_argument("--step-limit", type=float, default=None, help="seconds for one step (default 150)")
    parser.add_argument("--windows", type=int, default=None, help="timing windows (default 5)")
    parser.add_argument("--max-window-steps", type=int, default=50)
    parser.add_argument("--hvp-batch", type=int, default=8, help="sequences in Sophia's HVP timing")
    parser.add_argument("--e2e-scale", default="tiny-130k")
    parser.add_argument("--e2e-steps", type=int, default=None, help="training steps per run (default 40)")
    parser.add_argument("--no-public", action="store_true")
    parser.add_argument("--no-e2e", action="store_true")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    budget = args.budget or (8.0 if args.quick else 30.0)
    step_limit = args.step_limit or (60.0 if args.quick else 150.0)
    windows = args.windows or (3 if args.quick else 5)
    e2e_steps = args.e2e_steps or (20 if args.quick else 40)
    hvp_reps = 1 if args.quick else 3
    device = resolve_device(args.device)
    names = [n.strip() for n in args.optimizers.split(",") if n.strip()] or list(REGISTRY)
    for n in names:
        get_spec(n)  # an unknown name lists the valid ones
    cases = build_cases(names)

    models = [("step micro-benchmark", step_model_config(args.width, args.layers, args.family))]
    if device.type == "cuda":
        models.append(("step micro-benchmark at 130m", get_scale("130m")))
    po_version = package_version("pytorch-optimizer")
    print(
        f"commit {git_commit()}, torch {torch.__version__}, pytorch-optimizer {po_version}, "
        f"opt_einsum {'available' if torch.backends.opt_einsum.is_available() else 'not installed'}, "
        f"python {platform.python_version()}, device {device} "
        f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}), "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"budget {budget:.0f} s per implementation, step limit {step_limit:.0f} s, {windows} windows")
    builtin_corpus()  # load once, outside every timing

    e2e: dict[str, float] = {}
    if not args.no_e2e:
        e2e = end_to_end(names, args.e2e_scale, e2e_steps, str(device))

    comparisons: list[tuple[str, float, bool]] = []  # (label, ours/public, is an upper bound)
    notes: list[str] = []
    for title, cfg in models:
        ours: dict[str, Measurement] = {}
        public: dict[str, Measurement] = {}
        for case in cases:
            # MATH attention's double backward holds B x heads x T^2 scores per layer: one sequence at T = 4096
            hvp_batch = args.hvp_batch if cfg.seq_len <= 1024 else 1
            job = Job(cfg, str(device), case, budget, windows, args.max_window_steps, hvp_batch, hvp_reps)
            print(f"  measuring {case.label} ...", end="", flush=True)
            installed = case.public == PUBLIC["muon"] or po_version != "not installed"  # torch Muon is in torch
            if case.public == PUBLIC["kron"] and not torch.backends.opt_einsum.is_available():
                installed = False  # its first step would build a d^2 n^2 outer product (see the note below)
            m, pub = measure_case(job, step_limit, with_public=not args.no_public and installed)
            ours[case.label] = m
            print(f" {fmt(m.ms, '.1f')} ms", end="", flush=True)
            if pub is not None:
                public[case.label] = pub
                print(f"; {case.public} {fmt(pub.ms, '.1f')} ms", end="", flush=True)
            print(flush=True)
        print_table(title, cfg, cases, ours, public, {k: v for k, v in e2e.items() if k in ours})
        measured = [m for m in ours.values() if m.ok]
        if measured:
            fused = statistics.median(m.fused_ms for m in measured)
            foreach = statistics.median(m.foreach_ms for m in measured)
            print(f"torch AdamW: fused {fused:.1f} ms/step, foreach {foreach:.1f} ms/step (medians over the processes)")
        suffix = "" if len(models) == 1 else f" [{cfg.d_model}x{cfg.n_layers}]"
        for case in cases:
            for who, reading in (("ours", ours[case.label]), (case.public or "", public.get(case.label))):
                if reading is None:
                    continue
                for note in reading.notes:
                    notes.append(f"{case.label}{suffix} {who}: {note}")
                if reading.outside_state_bytes:
                    notes.append(
                        f"{case.label}{suffix} {who}: also holds {reading.outside_state_bytes / 2**20:.1f} MiB of "
                        "tensors outside optimizer.state (not in the state column)"
                    )
            pub = public.get(case.label)
            m = ours[case.label]
            if case.optimizer == "sophia" and not math.isnan(m.hvp_ms):
                k = m.hvp_interval
                line = (
                    f"sophia{suffix} HVP ({hvp_batch} x {cfg.seq_len} tokens, every {k} steps): ours {m.hvp_ms:.0f} ms "
                    f"per HVP = {m.hvp_ms / k:.1f} ms/step amortised, plain step + that {m.ms + m.hvp_ms / k:.1f} ms"
                )
                if pub is not None and pub.ok and not math.isnan(pub.hvp_ms):
                    ours_total, pub_total = m.ms + m.hvp_ms / k, pub.ms + pub.hvp_ms / k
                    line += (
                        f"; {case.public} {pub.hvp_ms:.0f} ms = {pub.hvp_ms / k:.1f} ms/step, plain step + that "
                        f"{pub_total:.1f} ms"
                    )
                    # the windowed plain-step ratio, scaled by what the amortised HVP adds to each side
                    comparisons.append(
                        (f"sophia (+HVP/{k}){suffix}", m.ratio_public * (ours_total / m.ms) / (pub_total / pub.ms),
                         False)
                    )  # fmt: skip
                notes.append(line)
            if pub is None or not m.ok:
                continue
            if pub.ok:
                comparisons.append((case.label + suffix, m.ratio_public, False))
            elif not math.isnan(pub.limit_s):
                comparisons.append((case.label + suffix, m.ms / (pub.limit_s * 1e3), True))
    if args.no_public:
        notes.append("public implementations skipped (--no-public)")
    elif po_version == "not installed":
        notes.append(
            "pytorch-optimizer is not installed, po.* comparisons skipped: `pip install -e '.[bench]'` (or "
            "`pip install pytorch-optimizer`)"
        )
    if not torch.backends.opt_einsum.is_available() and "kron" in names and not args.no_public:
        notes.append(
            "po.Kron not run: without opt_einsum, torch.einsum contracts its 'Q_L, Q_R, G' expression left to right, "
            "through the d^2 x n^2 outer product of the factors (64 Gi floats for a 256 x 1024 matrix: it hangs, "
            "then runs out of memory); `pip install opt_einsum` makes its steps finish"
        )
    notes.append(f"load average at the end: {os.getloadavg()[0]:.1f} (timings on a loaded machine are noisy)")
    print()
    for note in notes:
        print("note: " + note)
    print()
    for label, ratio, bound in comparisons:
        print(f"ratio ours/public {label:<24} {'<' if bound else ''}{ratio:.2f}")
    exact = [(r, label) for label, r, bound in comparisons if not bound]
    if exact:
        worst, label = max(exact)
        verdict = "met" if worst <= 1.0 else "NOT met"
        print(f"target (ours <= public on every comparison): {verdict}")
        print(f"worst ours/public ratio: {worst:.2f} ({label})")
    else:
        print("worst ours/public ratio: n/a (no public implementation measured)")


if __name__ == "__main__":
    main()
