"""The GPU path in one short script (issue 18): bf16 training at the paper's scales, MFU, every optimizer.

    python bench/gpu_check.py                         # on a CUDA machine: < 8 minutes on one H100/H200
    python bench/gpu_check.py --device cpu --tiny     # the CPU dry run that `make test` runs (tiny scales)

Imports only workers/ and torch (plus the standard library and NumPy, which workers.data uses): a GPU machine may
lack Ray, Optuna, SQLAlchemy or FastAPI. Writes one JSON file per figure to --out (default runs/gpu_check/) and
prints a table; the last line is the trainer's tokens/s over the plain loop's (target >= 0.97).

Sections (each isolated: one that fails records its error and the others still run; the exit status is 1 then):
- trainer: workers.trainer.train at 130m (the paper family: seq 4096, Llama-3 vocabulary of 128,256, bf16
  autocast, TF32, fused AdamW), eager and compiled: tokens/s over the steps after warm-up, MFU (model FLOPs per
  token, workers.trainer.flops_per_token: 6 x matrix parameters incl. the head + attention, against the GPU's
  bf16 dense peak, workers.trainer.PEAK_BF16_FLOPS), peak memory; and a minimal plain PyTorch loop of the same
  model, batch and optimizer, measured the same way.
- optimizers: all 13 for 20 steps at 130m with bf16 parameters (the optimizers keep fp32 state) on one fixed
  batch, each at its paper-family defaults: finite loss, last loss below the first, ms per optimizer step against
  fused AdamW's, peak memory. Targets: <= 1.5x fused AdamW except the second-order ones (sophia, kron, soap).
- sophia_hvp: Sophia-H's Hessian-vector product under bf16 autocast through the trainer's path (attention on the
  MATH SDPA backend, the one with a double backward), and which SDPA backends support double backward here.
- newton_schulz: workers.optimizers._newton_schulz in bf16 against fp32 on the paper's matrix shapes (relative
  Frobenius difference, ms), at Muon/Scion's 10 and MuonH's 5 steps.
- scale_1.2b: one forward/backward/optimizer step for AdamW and Muon at 1.2B (bf16 autocast, fp32 parameters,
  one sequence of 4096), peak memory: it fits.
Tokens are random ids (throughput and memory do not depend on the text); the loss-drop check memorises one batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make workers/ importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from workers.model import ModelConfig, build_model, get_scale
from workers.optimizers import REGISTRY, get_spec, resolve_hparams
from workers.optimizers._newton_schulz import newton_schulz
from workers.trainer import RunConfig, compute_gradients, flops_per_token, guess_peak_flops, resolve_device, train

SECOND_ORDER = ("sophia", "kron", "soap")  # allowed above 1.5x fused AdamW (issue 18); their ratios are printed
OPTIMIZER_RATIO_TARGET = 1.5
TRAINER_RATIO_TARGET = 0.97
MFU_TARGET = 0.5


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes of one run of the check: the paper's on a GPU, the tiny ladder's for the CPU dry run."""

    scale: str  # the 130m-class model
    big: str  # the 1.2B-class model
    vocab: int
    batch: int  # sequences per trainer / plain-loop step
    micro: int  # sequences per micro-batch
    steps: int  # trainer / plain-loop steps (the first `warm` are not timed)
    warm: int
    opt_batch: int  # sequences per optimizer-section step
    opt_steps: int
    compile: bool
    ns_shapes: tuple[tuple[int, int], ...]


GPU_PLAN = Plan(
    scale="130m",
    big="1.2b",
    vocab=128256,  # Llama-3 tokenizer (PAPER.md section 2)
    batch=8,
    micro=8,
    steps=14,
    warm=4,
    opt_batch=2,
    opt_steps=20,
    compile=True,
    ns_shapes=((512, 512), (2048, 512), (512, 2048), (1536, 1536), (6144, 1536)),
)
TINY_PLAN = Plan(
    scale="tiny-130k",
    big="tiny-1.2m",
    vocab=256,
    batch=4,
    micro=4,
    steps=5,
    warm=2,
    opt_batch=2,
    opt_steps=20,
    compile=False,  # torch.compile on CPU needs a C compiler and minutes; the GPU run covers it
    ns_shapes=((64, 64), (256, 64), (64, 256)),
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def model_config(scale: str, vocab: int) -> ModelConfig:
    return dataclasses.replace(get_scale(scale), vocab_size=vocab)


def write_tokens(directory: Path, vocab: int, n_tokens: int) -> Path:
    """Random token ids as a workers.data token directory (train.bin, val.bin, meta.json)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("train.bin", n_tokens), ("val.bin", n_tokens // 8)):
        rng.integers(0, vocab, size=n, dtype=np.uint32).tofile(directory / name)
    (directory / "meta.json").write_text(json.dumps({"vocab_size": vocab, "dtype": "uint32"}))
    return directory


def autocast(device: torch.device) -> Any:
    return (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )


# ---- sections ------------------------------------------------------------------------------------------------


def check_trainer(plan: Plan, device: torch.device, tokens: Path) -> dict[str, Any]:
    """The trainer and the plain loop, eager and (on CUDA) compiled: tokens/s after warm-up, MFU, peak memory."""
    cfg = model_config(plan.scale, plan.vocab)
    peak = guess_peak_flops(device)
    fpt = flops_per_token(cfg)
    out: dict[str, Any] = {"scale": plan.scale, "vocab": plan.vocab, "batch": plan.batch, "seq": cfg.seq_len}
    out["flops_per_token"] = fpt
    out["peak_flops"] = peak
    for compiled in (False, True) if plan.compile else (False,):
        mode = "compiled" if compiled else "eager"
        for kind, run in (("trainer", _trainer_tps), ("plain", _plain_tps)):
            reset_peak(device)
            tps = run(plan, cfg, device, tokens, compiled)
            out[f"{kind}_{mode}"] = {
                "tokens_per_second": tps,
                "mfu": tps * fpt / peak if peak else None,
                "peak_memory_gib": peak_gib(device),
            }
        out[f"ratio_{mode}"] = out[f"trainer_{mode}"]["tokens_per_second"] / out[f"plain_{mode}"]["tokens_per_second"]
    return out


def _trainer_tps(plan: Plan, cfg: ModelConfig, device: torch.device, tokens: Path, compiled: bool) -> float:
    marks: list[tuple[float, int]] = []

    def report(event: dict[str, Any]) -> None:
        if event["kind"] == "train":  # the trainer reads the loss back every step, so the device has synced
            marks.append((time.perf_counter(), int(event["tokens"])))

    train(
        RunConfig(
            scale=plan.scale,
            optimizer="adamw",
            chinchilla=1000.0,  # a long budget cut by max_steps: the schedule does not change the speed
            hparams={"batch_size": plan.batch, "warmup": 1},
            data=str(tokens),
            eval_every=10**9,
            eval_sequences=plan.micro,
            micro_batch_size=plan.micro,
            device=str(device),
            compile=compiled,
            max_steps=plan.steps,
        ),
        report=report,
    )
    (t0, n0), (t1, n1) = marks[plan.warm - 1], marks[-1]
    return (n1 - n0) / (t1 - t0)


def _plain_tps(plan: Plan, cfg: ModelConfig, device: torch.device, tokens: Path, compiled: bool) -> float:
    """The shortest loop that trains the same model: bf16 autocast, clip, fused AdamW (nanoGPT's train.py core)."""
    torch.manual_seed(0)
    model = build_model(cfg, device)
    forward = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.1, fused=True)
    data = np.fromfile(tokens / "train.bin", dtype=np.uint32)
    rng = np.random.default_rng(0)
    accum = plan.batch // plan.micro
    times: list[float] = []
    for _ in range(plan.steps):
        for _ in range(accum):
            starts = rng.integers(0, len(data) - cfg.seq_len - 1, size=plan.micro)
            chunk = torch.from_numpy(data[starts[:, None] + np.arange(cfg.seq_len + 1)].astype(np.int64)).to(device)
            with autocast(device):
                loss = forward(chunk[:, :-1], chunk[:, 1:]) / accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())  # read the loss back each step, as the trainer does
        times.append(time.perf_counter())
    timed = plan.steps - plan.warm
    return timed * plan.batch * cfg.seq_len / (times[-1] - times[plan.warm - 1])


def check_optimizers(plan: Plan, device: torch.device) -> dict[str, Any]:
    """Every optimizer 20 steps on one fixed batch with bf16 parameters: loss drop, ms per step, peak memory."""
    cfg = model_config(plan.scale, plan.vocab)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, plan.vocab, (plan.opt_batch, cfg.seq_len + 1), generator=gen).to(device)
    x, y = batch[:, :-1], batch[:, 1:]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows: dict[str, Any] = {}
    for name in ["adamw", *sorted(n for n in REGISTRY if n != "adamw")]:
        reset_peak(device)
        torch.manual_seed(0)
        model = build_model(cfg, device).to(dtype)
        spec = get_spec(name)
        hp = resolve_hparams(spec, cfg.family)
        optimizer = spec.build(model, hp)
        losses: list[float] = []
        step_ms: list[float] = []
        for _ in range(plan.opt_steps):
            losses.append(compute_gradients(model, optimizer, x, y, plan.opt_batch, device))
            if not spec.clips_itself:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(hp["max_grad_norm"]))
            sync(device)
            t0 = time.perf_counter()
            optimizer.step()
            sync(device)
            step_ms.append((time.perf_counter() - t0) * 1e3)
            optimizer.zero_grad(set_to_none=True)
        # Median over the steps after the first (which allocates state / builds preconditioners).
        ms = sorted(step_ms[1:])[len(step_ms[1:]) // 2]
        rows[name] = {
            "first_loss": losses[0],
            "last_loss": losses[-1],
            "finite": all(math.isfinite(v) for v in losses),
            "loss_dropped": losses[-1] < losses[0],
            "step_ms": ms,
            "peak_memory_gib": peak_gib(device),
            "param_dtype": str(dtype).removeprefix("torch."),
        }
        del model, optimizer
    base = rows["adamw"]["step_ms"]
    for name, row in rows.items():
        row["ratio_to_fused_adamw"] = row["step_ms"] / base
        row["within_target"] = name in SECOND_ORDER or row["ratio_to_fused_adamw"] <= OPTIMIZER_RATIO_TARGET
    return {"scale": plan.scale, "batch": plan.opt_batch, "steps": plan.opt_steps, "optimizers": rows}


def check_sophia_hvp(plan: Plan, device: torch.device) -> dict[str, Any]:
    """Sophia-H's Hessian step under bf16 autocast (trainer path, MATH backend); which backends double-backward."""
    cfg = model_config(plan.scale, plan.vocab)
    torch.manual_seed(0)
    model = build_model(cfg, device)
    spec = get_spec("sophia")
    optimizer = spec.build(model, resolve_hparams(spec, cfg.family))
    gen = torch.Generator().manual_seed(1)
    batch = torch.randint(0, plan.vocab, (plan.opt_batch, cfg.seq_len + 1), generator=gen).to(device)
    x, y = batch[:, :-1], batch[:, 1:]
    optimizer.update_interval = 1  # type: ignore[attr-defined]  # the HVP is due every k-th step; ask for it now
    assert optimizer.hessian_due()  # type: ignore[attr-defined]
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    loss = compute_gradients(model, optimizer, x, y, plan.opt_batch, device)
    sync(device)
    seconds = time.perf_counter() - t0
    hessian = [s["hessian"] for s in optimizer.state.values() if "hessian" in s]
    finite = bool(hessian) and all(bool(torch.isfinite(h).all()) for h in hessian)
    nonzero = any(bool(h.abs().sum() > 0) for h in hessian)  # the estimate starts at zero: the HVP filled it
    backends: dict[str, str] = {}
    q = torch.randn(1, 2, 64, 32, device=device, requires_grad=True)
    for backend in (
        SDPBackend.MATH,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.CUDNN_ATTENTION,
    ):
        try:
            with sdpa_kernel(backend), autocast(device):
                out = torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
                (g,) = torch.autograd.grad(out.float().square().sum(), q, create_graph=True)
                (h,) = torch.autograd.grad(g.float().square().sum(), q)
            backends[backend.name] = "double backward ok" if torch.isfinite(h).all() else "non-finite"
        except Exception as exc:
            backends[backend.name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    return {
        "scale": plan.scale,
        "loss": loss,
        "hessian_finite": finite,
        "hessian_nonzero": nonzero,
        "hessian_tensors": len(hessian),
        "seconds": seconds,
        "peak_memory_gib": peak_gib(device),
        "attention_backend_used": "MATH (workers.trainer.compute_gradients)",
        "sdpa_double_backward": backends,
    }


def check_newton_schulz(plan: Plan, device: torch.device) -> dict[str, Any]:
    """Newton-Schulz in bf16 against fp32 on the same matrices: relative Frobenius difference and time."""
    gen = torch.Generator().manual_seed(2)
    rows = []
    for m, n in plan.ns_shapes:
        G = torch.randn(m, n, generator=gen).to(device)
        for steps in (10, 5):
            row: dict[str, Any] = {"shape": [m, n], "steps": steps}
            results = {}
            for dtype in (torch.float32, torch.bfloat16):
                newton_schulz(G, steps, 1e-7, compute_dtype=dtype)  # warm-up
                sync(device)
                t0 = time.perf_counter()
                results[dtype] = newton_schulz(G, steps, 1e-7, compute_dtype=dtype)
                sync(device)
                row[f"ms_{str(dtype).removeprefix('torch.')}"] = (time.perf_counter() - t0) * 1e3
            ref = results[torch.float32]
            row["relative_difference"] = float(
                torch.linalg.matrix_norm(results[torch.bfloat16] - ref) / torch.linalg.matrix_norm(ref)
            )
            rows.append(row)
    return {"matrices": rows, "max_relative_difference": max(r["relative_difference"] for r in rows)}


def check_big(plan: Plan, device: torch.device) -> dict[str, Any]:
    """One forward/backward/optimizer step at the 1.2B class for AdamW and Muon (fp32 params, bf16 autocast)."""
    cfg = model_config(plan.big, plan.vocab)
    out: dict[str, Any] = {"scale": plan.big, "seq": cfg.seq_len, "batch": 1}
    gen = torch.Generator().manual_seed(3)
    batch = torch.randint(0, plan.vocab, (1, cfg.seq_len + 1), generator=gen).to(device)
    for name in ("adamw", "muon"):
        reset_peak(device)
        torch.manual_seed(0)
        model = build_model(cfg, device)
        spec = get_spec(name)
        optimizer = spec.build(model, resolve_hparams(spec, cfg.family))
        sync(device)
        t0 = time.perf_counter()
        loss = compute_gradients(model, optimizer, batch[:, :-1], batch[:, 1:], 1, device)
        optimizer.step()
        sync(device)
        out[name] = {
            "loss": loss,
            "finite": math.isfinite(loss),
            "seconds": time.perf_counter() - t0,
            "parameters": sum(p.numel() for p in model.parameters()),
            "peak_memory_gib": peak_gib(device),
        }
        del model, optimizer
    return out


# ---- driver ---------------------------------------------------------------------------------------------------


def run_section(name: str, fn: Callable[[], dict[str, Any]], out_dir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        result: dict[str, Any] = {"ok": True, **fn()}
    except Exception as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    result["wall_seconds"] = time.perf_counter() - t0
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "peak_bf16_flops": guess_peak_flops(device),
    }


def fmt(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: dict[str, dict[str, Any]], env: dict[str, Any]) -> None:
    print(f"GPU check: {env['device']}, torch {env['torch']}, CUDA {env['cuda']}, {env['date']}")
    for name, r in results.items():
        status = "ok" if r["ok"] else f"FAILED: {r['error'][:200]}"
        print(f"[{name}] {status} ({r['wall_seconds']:.1f} s)")
    trainer = results["trainer"]
    if trainer["ok"]:
        print(f"{'loop':<20}{'tokens/s':>12}{'MFU':>8}{'peak GiB':>10}")
        for key in ("trainer_eager", "plain_eager", "trainer_compiled", "plain_compiled"):
            if key in trainer:
                row = trainer[key]
                mfu = row["mfu"]
                print(
                    f"{key:<20}{row['tokens_per_second']:>12.0f}{fmt(mfu and 100 * mfu, '.1f'):>7}%"
                    f"{fmt(row['peak_memory_gib'], '.1f'):>10}"
                )
    opts = results["optimizers"]
    if opts["ok"]:
        print(f"{'optimizer':<12}{'loss 0 -> 20':>18}{'ms/step':>10}{'x AdamW':>9}{'peak GiB':>10}  ok")
        for name, row in opts["optimizers"].items():
            good = row["finite"] and row["loss_dropped"] and row["within_target"]
            print(
                f"{name:<12}{row['first_loss']:>8.3f} -> {row['last_loss']:<6.3f}{row['step_ms']:>10.2f}"
                f"{row['ratio_to_fused_adamw']:>9.2f}{fmt(row['peak_memory_gib'], '.1f'):>10}"
                f"  {'yes' if good else 'NO'}"
            )
    hvp = results["sophia_hvp"]
    if hvp["ok"]:
        print(f"Sophia-H HVP under bf16: finite={hvp['hessian_finite']} ({hvp['seconds']:.2f} s)")
        for backend, verdict in hvp["sdpa_double_backward"].items():
            print(f"  SDPA {backend}: {verdict}")
    ns = results["newton_schulz"]
    if ns["ok"]:
        for row in ns["matrices"]:
            print(
                f"NS {row['shape'][0]}x{row['shape'][1]} {row['steps']:>2} steps: bf16 vs fp32 "
                f"{100 * row['relative_difference']:.2f}%  ({row['ms_bfloat16']:.2f} vs {row['ms_float32']:.2f} ms)"
            )
    big = results["scale_big"]
    if big["ok"]:
        for name in ("adamw", "muon"):
            row = big[name]
            print(
                f"{big['scale']} {name}: one step {row['seconds']:.1f} s, peak {fmt(row['peak_memory_gib'], '.1f')} GiB"
            )
    if trainer["ok"]:
        mode = "compiled" if "ratio_compiled" in trainer else "eager"
        print(
            f"trainer / plain loop tokens/s ({mode}): {trainer[f'ratio_{mode}']:.3f}x"
            f" (target >= {TRAINER_RATIO_TARGET})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny scales: the CPU dry run of the same code")
    parser.add_argument("--out", default="runs/gpu_check", help="directory for the JSON figures")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plan = TINY_PLAN if args.tiny else GPU_PLAN
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    env = environment(device)
    (out_dir / "environment.json").write_text(json.dumps({**env, "plan": dataclasses.asdict(plan)}, indent=2))
    cfg = model_config(plan.scale, plan.vocab)
    tokens = write_tokens(out_dir / "tokens", plan.vocab, 64 * plan.batch * (cfg.seq_len + 1))
    results = {
        "trainer": run_section("trainer", lambda: check_trainer(plan, device, tokens), out_dir),
        "optimizers": run_section("optimizers", lambda: check_optimizers(plan, device), out_dir),
        "sophia_hvp": run_section("sophia_hvp", lambda: check_sophia_hvp(plan, device), out_dir),
        "newton_schulz": run_section("newton_schulz", lambda: check_newton_schulz(plan, device), out_dir),
        "scale_big": run_section("scale_big", lambda: check_big(plan, device), out_dir),
    }
    print_table(results, env)
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
