"""Trainer throughput: tokens/s of workers.trainer.train against a minimal plain PyTorch loop.

Baseline ("plain loop"): the identical model, batch shape, fused AdamW and global-norm clip in the
shortest loop that trains (nanoGPT's train.py without its extras), measured in the same process. The two
alternate for several rounds, the one that goes first swapping every round (A B, B A, ...), and the medians
are compared, so machine noise and drift hit both alike. Evaluation time is
excluded from both (the trainer reports training-only tokens/s). Prints the ratio (ours / plain) last;
the target is >= 0.95 on CPU.

    python bench/trainer_throughput.py [--scale tiny-130k] [--steps 100] [--rounds 6]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from workers.data import builtin_corpus
from workers.model import build_model, get_scale
from workers.trainer import RunConfig, resolve_device, train


def plain_loop(scale: str, steps: int, batch_size: int, lr: float, device: torch.device) -> float:
    """Tokens/s of the minimal loop: random windows, forward, backward, clip, fused AdamW."""
    cfg = get_scale(scale)
    tokens = builtin_corpus().train
    torch.manual_seed(0)
    model = build_model(cfg, device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-20, weight_decay=0.1, fused=True)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        starts = rng.integers(0, len(tokens) - cfg.seq_len - 1, size=batch_size)
        chunk = torch.from_numpy(tokens[starts[:, None] + np.arange(cfg.seq_len + 1)].astype(np.int64)).to(device)
        loss = model(chunk[:, :-1], chunk[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    float(loss.detach())  # wait for the device
    return steps * batch_size * cfg.seq_len / (time.perf_counter() - t0)


def ours(scale: str, steps: int, batch_size: int, lr: float, device: str) -> float:
    cfg = get_scale(scale)
    result = train(
        RunConfig(
            scale=scale,
            chinchilla=100.0,  # a long budget, cut by max_steps: the schedule is irrelevant to speed
            hparams={"lr": lr, "batch_size": batch_size, "warmup": 10},
            max_steps=steps,
            eval_every=10**9,  # only the final evaluation, which tokens/s excludes
            eval_sequences=cfg.seq_len,
            device=device,
        )
    )
    return result.tokens_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="tiny-130k")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    lr = 3e-3
    builtin_corpus()  # load once, outside the timings
    plain_loop(args.scale, 5, args.batch_size, lr, device)  # warm-up both paths (allocator, kernels)
    ours(args.scale, 5, args.batch_size, lr, str(device))
    plain_runs, our_runs = [], []
    for r in range(args.rounds):
        if r % 2 == 0:
            plain_runs.append(plain_loop(args.scale, args.steps, args.batch_size, lr, device))
            our_runs.append(ours(args.scale, args.steps, args.batch_size, lr, str(device)))
        else:
            our_runs.append(ours(args.scale, args.steps, args.batch_size, lr, str(device)))
            plain_runs.append(plain_loop(args.scale, args.steps, args.batch_size, lr, device))
        print(f"round {r + 1}: plain loop {plain_runs[-1]:,.0f} tok/s   trainer {our_runs[-1]:,.0f} tok/s")
    plain, mine = statistics.median(plain_runs), statistics.median(our_runs)
    print(f"scale {args.scale}, batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds on {device}")
    print(f"plain loop (baseline)  {plain:,.0f} tok/s (median)")
    print(f"workers.trainer        {mine:,.0f} tok/s (median)")
    print(f"ratio trainer/plain    {mine / plain:.3f}")


if __name__ == "__main__":
    main()
