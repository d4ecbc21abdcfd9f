"""MARS-AdamW as the paper ran it: Levanter's `scale_by_mars` (OPTIMIZERS.md 3.5).

Rule (Levanter; g_0 = 0, t = 1-based step):
    c_t = g_t + gamma b1 / (1 - b1) (g_t - g_{t-1})              (variance reduction, `is_approx` form)
    c_t <- c_t min(1, max_grad_norm / (||c||_global + 1e-6))      (ONE norm over all parameters; 0 = off)
    m = b1 m + (1-b1) c_t;  v = b2 v + (1-b2) c_t^2;  u = m_hat / (sqrt(v_hat) + eps)
    theta <- theta - lr (u + wd theta)
g_{t-1} is the previous raw gradient (Levanter stores the incoming `updates`, not the clipped c).
Differences from the reference AGI-Arena/MARS: there c is clipped per tensor to norm 1 and 1-D params use plain
AdamW (`optimize_1d=False`); Levanter clips c by its global norm and applies MARS to every parameter, 1-D
included. So the trainer must not clip the raw gradients (`clips_itself=True`): the clip is on c, here.
State per param: step, exp_avg, exp_avg_sq and prev_grad (3x the parameters), all float32 (float64 for float64
params). Decay mask as AdamW: matrices and lm_head decayed; embedding and norms not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from workers.optimizers import _cpu_kernels as cpu_kernels
from workers.optimizers.base import HParams, OptimizerSpec, SearchSpace, decay_param_groups
from workers.optimizers.functional import adam_step_, advance_steps, bias_corrections, state_buffers
from workers.optimizers.nadamw import StateDtypeOptimizer, params_with_grads


@torch.no_grad()
def clip_divisor(tensors: list[torch.Tensor], max_norm: float) -> torch.Tensor | None:
    """max(1, (norm + 1e-6) / max_norm), norm the joint L2 norm of `tensors`; None when off (max_norm <= 0).

    Dividing by it is Levanter's scale_by_mars clip, c min(1, max_norm / (||c|| + 1e-6)) (1e-6 is Levanter's).
    No host sync: the divisor stays a tensor, which the fused Adam kernel applies as it reads c (adam_step_).
    Norms are taken in the tensors' own dtype (float64 in the reference tests).
    """
    if max_norm <= 0 or not tensors:
        return None
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))
    return torch.clamp((norm + 1e-6) / max_norm, min=1.0)


class MarsAdamW(StateDtypeOptimizer):
    """Levanter's MARS-AdamW over all param groups; the clip of c is global across groups.

    Group keys: lr, betas, eps, weight_decay, gamma. `max_grad_norm` (0 = off) is the optimizer's, as it
    spans all groups.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.95, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        gamma: float = 0.025,
        max_grad_norm: float = 1.0,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "gamma": gamma}
        super().__init__(params, defaults)
        self.max_grad_norm = float(max_grad_norm)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._kernel_step():
            return loss
        # Pass 1: c_t for every group (the clip needs all of them). c_t = g + k (g - g_{t-1}) = lerp(g_{t-1}, g, 1 + k)
        # is written over the prev_grad buffer (no model-sized temporary); g_t goes back into it after the step.
        per_group: list[tuple[dict[str, Any], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]] = []
        for group in self.param_groups:
            params, grads = params_with_grads(group)
            if not params:
                continue
            beta1 = group["betas"][0]
            prevs = state_buffers(self.state, params, "prev_grad")
            torch._foreach_lerp_(prevs, grads, 1 + group["gamma"] * beta1 / (1 - beta1))  # now c_t
            per_group.append((group, params, grads, prevs))
        divisor = clip_divisor([c for *_, cs in per_group for c in cs], self.max_grad_norm)
        # Pass 2: clip, Adam on c_t, decay and -lr (torch's fused Adam kernel where the dtypes allow it, the clip
        # folded into it); then g_{t-1} <- g_t.
        for group, params, grads, cs in per_group:
            beta1, beta2 = group["betas"]
            adam_step_(
                self.state, params, cs, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                weight_decay=group["weight_decay"], grad_divisor=divisor,
            )  # fmt: skip
            torch._foreach_copy_(cs, grads)
        return loss

    def _kernel_step(self) -> bool:
        """The same step with cpu_kernels (float32 CPU tensors): ||c|| in one pass over g and g_{t-1}, then c, Adam,
        decay, -lr and g_{t-1} <- g in one more pass per tensor. False when not taken (torch ops instead)."""
        Tensors = list[torch.Tensor]
        work: list[tuple[dict[str, Any], Tensors, Tensors, Tensors, Tensors, Tensors]] = []
        for group in self.param_groups:
            params, grads = params_with_grads(group)
            if params:
                keys = ("prev_grad", "exp_avg", "exp_avg_sq")
                prevs, ms, vs = (state_buffers(self.state, params, key) for key in keys)
                work.append((group, params, grads, prevs, ms, vs))
        kernels = cpu_kernels.kernels_for(*[ts for w in work for ts in w[1:]]) if work else None
        if kernels is None:
            return False
        ks = [group["gamma"] * group["betas"][0] / (1 - group["betas"][0]) for group, *_ in work]
        divisor = 1.0
        if self.max_grad_norm > 0:
            pairs = zip(work, ks, strict=True)
            total = sum(kernels.mars_sumsq(grads, prevs, k) for (_, _, grads, prevs, *_), k in pairs)
            divisor = (math.sqrt(total) + 1e-6) / self.max_grad_norm  # clip_divisor's value: at least 1, and
            divisor = divisor if divisor > 1.0 or math.isnan(divisor) else 1.0  # NaN stays NaN (torch.clamp)
        for (group, params, grads, prevs, ms, vs), k in zip(work, ks, strict=True):
            beta1, beta2 = group["betas"]
            steps = advance_steps(self.state, params)
            bc1s, bc2ss = bias_corrections(steps, beta1, beta2)
            kernels.mars_apply(
                params, grads, prevs, ms, vs, k, divisor, beta1, beta2, bc1s, bc2ss, group["eps"], group["lr"],
                group["weight_decay"],
            )  # fmt: skip
        return True


def build(model: nn.Module, hp: HParams) -> torch.optim.Optimizer:
    return MarsAdamW(
        decay_param_groups(model, float(hp["wd"])),
        lr=float(hp["lr"]),
        betas=(float(hp["beta1"]), float(hp["beta2"])),
        eps=float(hp["eps"]),
        gamma=float(hp["gamma"]),
        max_grad_norm=float(hp["max_grad_norm"]),
    )


# PAPER.md section 3 (Mars's Phase I grid; clip fixed at 1). Baseline: the paper's best 130m 1x config
# (shared/data/paper_results.json, mars/130m/1).
PAPER_SPACE = SearchSpace(
    grid={
        "lr": (8e-3, 1.6e-2, 3.2e-2),
        "wd": (0.0, 0.1, 0.2),
        "warmup": (500, 1000, 2000, 4000),
        "beta1": (0.8, 0.9, 0.95, 0.98),
        "beta2": (0.9, 0.95, 0.98, 0.99),
        "gamma": (0.0125, 0.025, 0.05, 0.1),
        "eps": (1e-30, 1e-25, 1e-20, 1e-15, 1e-10),
        "batch_size": (128, 256, 512, 1024),
    },
    baseline={
        "lr": 1.6e-2,
        "wd": 0.1,
        "warmup": 2000,
        "beta1": 0.9,
        "beta2": 0.95,
        "gamma": 0.025,
        "eps": 1e-25,
        "batch_size": 128,
    },
    fixed={"max_grad_norm": 1.0, "min_lr_ratio": 0.0},
)

# Same hyperparameters and number of values for tiny CPU scales (~640 steps of 32 x 128 tokens on tiny-130k):
# warmups and batches as AdamW's TINY_SPACE, learning rates x1.5 as AdamW's tiny grid against its paper grid.
# Measured on tiny-130k at 1x Chinchilla (640 steps, seed 0): this baseline reached 1.719 (AdamW baseline 1.868);
# lr 2.4e-2 was worse at 0.25x (2.631 against 2.320).
TINY_SPACE = SearchSpace(
    grid={
        "lr": (6e-3, 1.2e-2, 2.4e-2),
        "wd": (0.0, 0.1, 0.2),
        "warmup": (16, 32, 64, 128),
        "beta1": (0.8, 0.9, 0.95, 0.98),
        "beta2": (0.9, 0.95, 0.98, 0.99),
        "gamma": (0.0125, 0.025, 0.05, 0.1),
        "eps": (1e-30, 1e-25, 1e-20, 1e-15, 1e-10),
        "batch_size": (16, 32, 64, 128),
    },
    baseline={
        "lr": 1.2e-2,
        "wd": 0.1,
        "warmup": 32,
        "beta1": 0.9,
        "beta2": 0.95,
        "gamma": 0.025,
        "eps": 1e-25,
        "batch_size": 32,
    },
    fixed={"max_grad_norm": 1.0, "min_lr_ratio": 0.0},
)

SPEC = OptimizerSpec(
    name="mars",
    build=build,
    # Levanter MarsConfig defaults (OPTIMIZERS.md 3.5: wd 0.1, beta1 0.95, beta2 0.99, gamma 0.025, eps 1e-8)
    # where the search space gives no baseline.
    defaults={"wd": 0.1, "beta1": 0.95, "beta2": 0.99, "gamma": 0.025, "eps": 1e-8},
    spaces={"paper": PAPER_SPACE, "tiny": TINY_SPACE},
    routing="all parameters (1-D included): MARS-AdamW, c_t clipped by its global norm over all parameters "
    "(max_grad_norm) inside the optimizer; decayed: hidden matrices and lm_head; not decayed: embedding, norms",
    clips_itself=True,
    reference="Levanter scale_by_mars (stanford-crfm/levanter optim/mars.py); AGI-Arena/MARS mars-adamw differs "
    "(per-tensor clip, 1-D params on AdamW)",
    cpu_kernels=True,
)
