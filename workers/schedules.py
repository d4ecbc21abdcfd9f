"""Learning-rate schedules: pure functions of the step returning the factor that multiplies the peak lr.

PAPER.md section 2 and Levanter's `lr_schedule`: a linear warmup from 0 over `warmup` steps, then
- "cosine": cosine decay to `min_lr_ratio` (most optimizers; the paper's min_lr_ratio is 0);
- "linear": linear decay to `min_lr_ratio`;
- "wsd": warmup-stable-decay: constant after warmup, then a linear decay over the last `decay` fraction of
  all steps (Muon and Scion: "linear WSD schedule, warmup 0").
For "cosine" and "linear", `decay` < 1 likewise keeps the rate constant until the last `decay` fraction.
Steps count from 0; the factor at step 0 is 0 when warmup > 0 (optax linear_schedule from 0).
"""

from __future__ import annotations

import math

KINDS = ("cosine", "linear", "wsd")


def lr_factor(
    step: int,
    total_steps: int,
    *,
    kind: str = "cosine",
    warmup: int = 0,
    min_lr_ratio: float = 0.0,
    decay: float = 1.0,
) -> float:
    if kind not in KINDS:
        raise ValueError(f"unknown schedule {kind!r}; valid: {', '.join(KINDS)}")
    if total_steps <= 0:
        raise ValueError("total_steps must be positive")
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be a fraction in [0, 1], got {decay}")
    if warmup > 0 and step < warmup:
        return step / warmup
    # The decay phase: the last `decay` fraction of all steps, but never before warmup ends.
    decay_steps = round(decay * total_steps)
    decay_start = max(warmup, total_steps - decay_steps)
    if step < decay_start:
        return 1.0
    length = max(1, total_steps - decay_start)
    progress = min(1.0, (step - decay_start) / length)  # 0 at the start of the decay, -> 1 at the last step
    if kind == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:  # "linear" and "wsd" decay linearly
        shape = 1.0 - progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape
