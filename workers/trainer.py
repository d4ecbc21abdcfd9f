"""One training run: `train(config, report=callback) -> RunResult`. Every trial of every sweep is one call.

A readable loop in the manner of nanoGPT's train.py: steps from the token budget (tokens = chinchilla
multiple x 20 x non-embedding parameters, PAPER.md section 2), the optimizer's learning-rate schedule,
gradient accumulation, global-norm clipping unless the optimizer clips a subset itself, periodic evaluation
on a fixed validation set, divergence detection, and checkpoints that resume bitwise on CPU.

Usable without Ray: the Ray Tune trainable calls it and forwards `report` events to `tune.report`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from workers.data import TokenSource, load_source, train_batch, val_batches
from workers.model import ModelConfig, Transformer, build_model, chinchilla_tokens, get_scale, non_embedding_params
from workers.optimizers import HessianOptimizer, get_spec, prepare_cpu_kernels, resolve_hparams
from workers.optimizers.base import HParam
from workers.schedules import lr_factor

Report = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class DivergenceRule:
    """When a run counts as diverged: a non-finite loss always; above `max_loss` at any step (PAPER.md section
    4 step 2: > 1e4); at or above `late_loss` once `late_step` steps have run (the paper's rule: loss >= 6
    after >= 2000 steps; off by default since it depends on the tokenizer)."""

    max_loss: float = 1e4
    late_loss: float | None = None
    late_step: int = 0

    def check(self, step: int, loss: float) -> str | None:
        if not math.isfinite(loss):
            return f"loss is {loss} at step {step}"
        if loss > self.max_loss:
            return f"loss {loss:.4g} > {self.max_loss:g} at step {step}"
        if self.late_loss is not None and step >= self.late_step and loss >= self.late_loss:
            return f"loss {loss:.4g} >= {self.late_loss:g} at step {step} (after step {self.late_step})"
        return None


@dataclass(frozen=True)
class RunConfig:
    scale: str
    optimizer: str = "adamw"
    chinchilla: float = 1.0
    hparams: Mapping[str, HParam] = field(default_factory=dict)
    seed: int = 0
    data: str | None = None  # None or "builtin": the built-in corpus; else a token-file path
    vocab_size: int | None = None  # for token files without meta.json
    eval_every: int = 0  # 0: about 10 evaluations per run
    eval_sequences: int = 128  # size of the fixed validation set, in sequences
    micro_batch_size: int | None = None  # None: the whole batch at once; else gradient accumulation
    checkpoint_dir: str | None = None  # resume from here when a checkpoint exists
    checkpoint_every: int = 0  # 0: no periodic checkpoints
    divergence: DivergenceRule = field(default_factory=DivergenceRule)
    device: str = "auto"  # "auto": CUDA when available, else CPU
    compile: bool = False  # torch.compile the model (CUDA)
    threads: int | None = None  # torch intra-op threads: a Ray trial sets its CPU count
    max_steps: int | None = None  # stop early after this many steps (smoke tests); the schedule is unchanged
    peak_flops: float | None = None  # for MFU; None: guessed from the GPU name


@dataclass
class RunResult:
    status: str  # "completed" or "diverged"
    final_eval_loss: float  # +inf when diverged: a diverged run ranks last (DESIGN.md, "trial")
    initial_eval_loss: float
    steps: int  # steps run
    total_steps: int  # steps the token budget asks for
    tokens: int  # training tokens consumed
    tokens_per_second: float
    wall_seconds: float
    hparams: dict[str, HParam]
    curve: list[tuple[int, float]]  # (step, eval loss)
    diverged_step: int | None = None
    reason: str | None = None
    mfu: float | None = None
    info: dict[str, Any] = field(default_factory=dict)  # reproducibility record

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_device(name: str) -> torch.device:
    """auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps; anything else, or a device that is absent, is
    a ValueError that says why (torch's own errors are an assertion or a list of twenty device types)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":  # Apple silicon
        if not torch.backends.mps.is_available():
            raise ValueError("device 'mps': not available (no Apple-silicon GPU, or this torch build lacks MPS)")
        return torch.device("mps")
    kind, sep, index = name.partition(":")
    if kind != "cuda" or (sep and not (index.isascii() and index.isdigit())):
        raise ValueError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N, mps")
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise ValueError(f"device {name!r}: CUDA is not available ({why}, torch {torch.__version__}); use cpu")
    visible = torch.cuda.device_count()
    if sep and int(index) >= visible:
        raise ValueError(
            f"device {name!r}: no such CUDA device; visible: {', '.join(f'cuda:{i}' for i in range(visible))}"
        )
    return torch.device(name)


# Dense bf16 peak FLOP/s by GPU name (vendor data sheets), for MFU. Unknown GPUs report no MFU.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


def guess_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token: 6 x (matrix parameters incl. the head) + attention (PaLM appendix B)."""
    n = non_embedding_params(cfg) + cfg.d_model * cfg.vocab_size
    return 6 * n + 12 * cfg.n_layers * cfg.d_model * cfg.seq_len


def plan_steps(cfg: ModelConfig, chinchilla: float, batch_size: int) -> int:
    """Steps = tokens / (sequence length x batch size) (PAPER.md section 2), at least one."""
    return max(1, round(chinchilla_tokens(cfg, chinchilla) / (cfg.seq_len * batch_size)))


def _repro_info(source: TokenSource, device: torch.device, cfg: ModelConfig) -> dict[str, Any]:
    try:
        version = metadata.version("sweep-service")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "sweep_service": version,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "data": source.describe(),
        "model": dataclasses.asdict(cfg),
    }


@contextlib.contextmanager
def _precision(device: torch.device) -> Iterator[None]:
    # bf16 autocast on CUDA (the paper trained in bf16 on TPUs); fp32 on CPU, where bf16 matmuls are slow.
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> float:
    """Mean cross-entropy over the fixed validation set (sequence-weighted)."""
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        with _precision(device):
            loss = model(x.to(device), y.to(device))
        total += float(loss) * x.size(0)
        count += x.size(0)
    model.train()
    return total / count


def compute_gradients(
    forward: Callable[..., torch.Tensor],
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    micro_batch_size: int,
    device: torch.device,
) -> float:
    """Fill .grad with the gradient of the mean loss over the batch (accumulated over micro-batches).

    Returns the batch's training loss. For a `HessianOptimizer` whose Hessian update is due, the gradients
    are taken with a graph and handed to `update_hessian` first (Sophia-H); the fused attention kernels have
    no double backward, so attention runs on the MATH backend for that step (OPTIMIZERS.md section 8).
    """
    batch_size = x.size(0)
    accum = batch_size // micro_batch_size
    if isinstance(optimizer, HessianOptimizer) and optimizer.hessian_due():
        params = optimizer.hessian_params()
        with sdpa_kernel(SDPBackend.MATH), _precision(device):
            losses = [
                forward(x[i : i + micro_batch_size], y[i : i + micro_batch_size])
                for i in range(0, batch_size, micro_batch_size)
            ]
            loss = torch.stack(losses).mean()
            grads = torch.autograd.grad(loss, params, create_graph=True)
            optimizer.update_hessian(list(grads))
        for p, g in zip(params, grads, strict=True):
            p.grad = g.detach()
        return float(loss.detach())
    total = torch.zeros((), device=device)
    for i in range(0, batch_size, micro_batch_size):
        with _precision(device):
            loss = forward(x[i : i + micro_batch_size], y[i : i + micro_batch_size]) / accum
        loss.backward()
        total += loss.detach()
    return float(total)


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a crash mid-write leaves the previous checkpoint intact


def check_config(config: RunConfig) -> None:
    """The numbers of a RunConfig that no run can use; each ValueError names the field."""
    if not (math.isfinite(config.chinchilla) and config.chinchilla > 0):
        raise ValueError(f"chinchilla must be a finite number > 0, got {config.chinchilla:g}")
    for name in ("threads", "max_steps", "micro_batch_size"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    for name in ("eval_every", "checkpoint_every"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0 (0: the default), got {getattr(config, name)}")
    if config.checkpoint_every and not config.checkpoint_dir:
        raise ValueError("checkpoint_every needs a checkpoint_dir to write to")
    if config.checkpoint_dir and Path(config.checkpoint_dir).exists() and not Path(config.checkpoint_dir).is_dir():
        raise ValueError(f"checkpoint_dir {config.checkpoint_dir!r} is a file, not a directory")


def train(config: RunConfig, report: Report | None = None) -> RunResult:
    """Run one training run to completion or divergence. Configuration errors raise ValueError before training."""
    check_config(config)
    device = resolve_device(config.device)
    spec = get_spec(config.optimizer)
    source = load_source(config.data, config.vocab_size)
    scale = get_scale(config.scale)
    hp = resolve_hparams(spec, scale.family, config.hparams)
    # The init hyperparameter picks the model's initialisation (workers.model.INITS; ModelConfig names bad values).
    cfg = dataclasses.replace(scale, vocab_size=source.vocab_size, init=str(hp["init"]))
    batch_size = int(hp["batch_size"])
    micro = config.micro_batch_size or batch_size
    if batch_size <= 0 or micro <= 0 or batch_size % micro != 0:
        raise ValueError(f"batch_size {batch_size} must be a positive multiple of micro_batch_size {micro}")
    total_steps = plan_steps(cfg, config.chinchilla, batch_size)
    warmup = int(hp["warmup"])
    if warmup > 0 and warmup >= total_steps:
        raise ValueError(f"warmup {warmup} is not less than the run's {total_steps} steps (docs/PAPER.md section 2)")
    run_steps = min(total_steps, config.max_steps) if config.max_steps else total_steps

    if config.threads:
        torch.set_num_threads(config.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    torch.manual_seed(config.seed)
    model: Transformer = build_model(cfg, device)
    optimizer = spec.build(model, hp)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    forward: Callable[..., torch.Tensor] = torch.compile(model) if config.compile else model
    val = val_batches(source, config.eval_sequences, micro, cfg.seq_len)
    eval_every = config.eval_every or max(1, run_steps // 10)
    params = [p for p in model.parameters() if p.requires_grad]
    prepare_cpu_kernels(spec, params)  # a first build (~40 s) before the clock starts, not in the first step
    max_grad_norm = float(hp["max_grad_norm"])
    schedule = {
        "kind": spec.schedule,
        "warmup": warmup,
        "min_lr_ratio": float(hp["min_lr_ratio"]),
        "decay": float(hp["decay"]),
    }

    ckpt_path = Path(config.checkpoint_dir) / "checkpoint.pt" if config.checkpoint_dir else None
    start_step, curve, train_seconds = 0, [], 0.0
    initial_eval = math.nan
    if ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start_step, curve = state["step"], state["curve"]
        initial_eval, train_seconds = state["initial_eval_loss"], state["train_seconds"]
    else:
        initial_eval = evaluate(model, val, device)
        curve = [(0, initial_eval)]
        if report:
            report({"kind": "eval", "step": 0, "total_steps": run_steps, "eval_loss": initial_eval, "tokens": 0})

    tokens_per_step = batch_size * cfg.seq_len
    status, reason, diverged_step = "completed", None, None
    step = start_step
    wall_start = time.perf_counter()
    while step < run_steps:
        t0 = time.perf_counter()
        factor = lr_factor(step, total_steps, **schedule)  # type: ignore[arg-type]
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        x, y = train_batch(source, config.seed, step, batch_size, cfg.seq_len)
        x, y = x.to(device), y.to(device)
        train_loss = compute_gradients(forward, optimizer, x, y, micro, device)
        problem = config.divergence.check(step, train_loss)
        if problem is not None:
            status, reason, diverged_step = "diverged", problem, step
            break
        if not spec.clips_itself and max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        train_seconds += time.perf_counter() - t0

        event: dict[str, Any] = {
            "kind": "train",
            "step": step,
            "total_steps": run_steps,
            "train_loss": train_loss,
            "lr_factor": factor,
            "tokens": step * tokens_per_step,
            "tokens_per_second": (step - start_step) * tokens_per_step / max(train_seconds, 1e-9),
        }
        if report:
            report(event)
        if step % eval_every == 0 or step == run_steps:
            eval_loss = evaluate(model, val, device)
            curve.append((step, eval_loss))
            if report:
                report({**event, "kind": "eval", "eval_loss": eval_loss})
            problem = config.divergence.check(step, eval_loss)
            if problem is not None:
                status, reason, diverged_step = "diverged", problem, step
                break
        if ckpt_path is not None and config.checkpoint_every and step % config.checkpoint_every == 0:
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            _save_checkpoint(
                ckpt_path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": torch.get_rng_state(),
                    "step": step,
                    "curve": curve,
                    "initial_eval_loss": initial_eval,
                    "train_seconds": train_seconds,
                },
            )

    tokens = step * tokens_per_step
    tps = (step - start_step) * tokens_per_step / train_seconds if train_seconds > 0 else 0.0
    peak = config.peak_flops or guess_peak_flops(device)
    return RunResult(
        status=status,
        final_eval_loss=curve[-1][1] if status == "completed" else math.inf,
        initial_eval_loss=initial_eval,
        steps=step,
        total_steps=total_steps,
        tokens=tokens,
        tokens_per_second=tps,
        wall_seconds=time.perf_counter() - wall_start,
        hparams=dict(hp),
        curve=curve,
        diverged_step=diverged_step,
        reason=reason,
        mfu=tps * flops_per_token(cfg) / peak if peak else None,
        info=_repro_info(source, device, cfg),
    )
