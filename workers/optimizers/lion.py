"""Lion as the paper ran it: Levanter's LionConfig = optax scale_by_lion after a global clip (OPTIMIZERS.md 3.3).

Rule (optax scale_by_lion, mode "hard"):
    u = sign(b1 m + (1-b1) g)
    m <- b2 m + (1-b2) g
    theta <- theta - lr (u + wd theta)          (optax add_decayed_weights(wd) then scale(-lr))
The decay is the usual decoupled lr * wd. It is NOT lion-pytorch's `decoupled_weight_decay=True`, which divides
wd by the initial lr. The paper's wd grid (0.4 .. 1.0) is for this lr * wd form. Gradient clipping by global norm
over all parameters is the trainer's (Levanter puts `clip_by_global_norm` first in the chain). Decayed: hidden
matrices and lm_head; not decayed: embedding, norms. State: one momentum per parameter (float32).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from workers.optimizers import _cpu_kernels as cpu_kernels
from workers.optimizers.base import HParams, OptimizerSpec, SearchSpace, decay_param_groups
from workers.optimizers.functional import apply_updates_, scratch_buffers, state_buffers
from workers.optimizers.nadamw import StateDtypeOptimizer, params_with_grads


class Lion(StateDtypeOptimizer):
    """optax scale_by_lion + add_decayed_weights + scale(-lr), per param group.

    Group keys: lr, betas, weight_decay. State per param: exp_avg (float32, or float64 for float64 params).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = params_with_grads(group)
            if not params:
                continue
            beta1, beta2 = group["betas"]
            ms = state_buffers(self.state, params, "exp_avg")
            kernels = cpu_kernels.kernels_for(params, grads, ms)
            if kernels is not None:  # the same step in one pass (float32 CPU tensors)
                kernels.lion_step(params, grads, ms, beta1, beta2, group["lr"], group["weight_decay"])
                continue
            # sign(b1 m + (1-b1) g), the interpolation as one lerp (equal up to rounding); sign(0) = 0 as jnp.sign.
            # Into a work buffer kept between steps: on a CPU a fresh model-sized tensor every step costs more
            # than the passes (bench/optimizer_step.py, 2026-12-04; functional.scratch_buffers).
            updates = scratch_buffers(self, params, "update")
            torch._foreach_copy_(updates, ms)
            torch._foreach_lerp_(updates, grads, 1 - beta1)
            torch._foreach_sign_(updates)
            torch._foreach_lerp_(ms, grads, 1 - beta2)
            apply_updates_(params, list(updates), group["lr"], group["weight_decay"])
        return loss


def build(model: nn.Module, hp: HParams) -> torch.optim.Optimizer:
    return Lion(
        decay_param_groups(model, float(hp["wd"])),
        lr=float(hp["lr"]),
        betas=(float(hp["beta1"]), float(hp["beta2"])),
    )


# PAPER.md section 3 (Lion's Phase I grid; Lion has no eps). Baseline: the paper's best 130m 1x config
# (shared/data/paper_results.json, lion/130m/1).
PAPER_SPACE = SearchSpace(
    grid={
        "lr": (5e-4, 1e-3, 2e-3, 4e-3, 8e-3),
        "wd": (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        "warmup": (500, 1000, 2000, 4000),
        "beta1": (0.8, 0.9, 0.95, 0.98),
        "beta2": (0.9, 0.95, 0.98),
        "max_grad_norm": (0.0, 1.0, 2.0),
        "batch_size": (128, 256, 512, 1024),
    },
    baseline={
        "lr": 2e-3,
        "wd": 0.7,
        "warmup": 2000,
        "beta1": 0.9,
        "beta2": 0.95,
        "max_grad_norm": 1.0,
        "batch_size": 128,
    },
    fixed={"min_lr_ratio": 0.0},
)

# Same hyperparameters and number of values for tiny CPU scales (~640 steps of 32 x 128 tokens on tiny-130k):
# warmups and batches as AdamW's TINY_SPACE, learning rates x1.5 as AdamW's tiny grid against its paper grid.
# Measured on tiny-130k at 1x Chinchilla (640 steps, seed 0): lr 3e-3 reached 1.878, lr 1.5e-3 1.901 (AdamW baseline
# 1.868); lr 6e-3 was worse at 0.25x (2.780 against 2.561).
TINY_SPACE = SearchSpace(
    grid={
        "lr": (7.5e-4, 1.5e-3, 3e-3, 6e-3, 1.2e-2),
        "wd": (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        "warmup": (16, 32, 64, 128),
        "beta1": (0.8, 0.9, 0.95, 0.98),
        "beta2": (0.9, 0.95, 0.98),
        "max_grad_norm": (0.0, 1.0, 2.0),
        "batch_size": (16, 32, 64, 128),
    },
    baseline={
        "lr": 3e-3,
        "wd": 0.7,
        "warmup": 32,
        "beta1": 0.9,
        "beta2": 0.95,
        "max_grad_norm": 1.0,
        "batch_size": 32,
    },
    fixed={"min_lr_ratio": 0.0},
)

SPEC = OptimizerSpec(
    name="lion",
    build=build,
    # Levanter LionConfig defaults (OPTIMIZERS.md 3.3: beta1 0.9, beta2 0.95; wd 0.0 is the OptimizerConfig base
    # default) where the search space gives no baseline.
    defaults={"wd": 0.0, "beta1": 0.9, "beta2": 0.95},
    spaces={"paper": PAPER_SPACE, "tiny": TINY_SPACE},
    routing="all parameters: Lion (sign of the interpolated momentum), decay lr*wd; decayed: hidden matrices and "
    "lm_head; not decayed: embedding, norms; clipped by the trainer's global norm",
    reference="optax scale_by_lion via Levanter LionConfig; lion-pytorch Lion (decoupled_weight_decay=False) agrees",
    cpu_kernels=True,
)
