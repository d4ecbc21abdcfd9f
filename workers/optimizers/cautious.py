"""Cautious AdamW (C-AdamW) as the paper ran it: Levanter's `scale_by_cautious` (OPTIMIZERS.md 3.4).

Rule (Levanter, per parameter tensor):
    u = m_hat / (sqrt(v_hat) + eps)                    (plain Adam, bias-corrected, eps outside the sqrt)
    mask = 1[u * g > 0]                                (u has the sign of m, so this is C-Optim's m * g > 0)
    u <- u * mask / (mean(mask) + eps)                 (mean over the tensor; the same eps as Adam's)
    theta <- theta - lr (u + wd theta)                 (decay after the mask, so unmasked)
Variants differ in the normalisation (C-Optim and timm: mean().clamp(1e-3); pytorch-optimizer: numel/(sum+1));
we keep Levanter's to reproduce the paper. Gradient clipping by global norm over all parameters is the
trainer's (Levanter puts `clip_by_global_norm` first in the chain). Decay mask as AdamW: matrices and lm_head.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from workers.optimizers import _cpu_kernels as cpu_kernels
from workers.optimizers.base import HParams, OptimizerSpec, SearchSpace, decay_param_groups
from workers.optimizers.functional import (
    adam_directions_into_,
    advance_steps,
    apply_updates_,
    bias_corrections,
    scratch_buffers,
    state_buffers,
)
from workers.optimizers.nadamw import StateDtypeOptimizer, params_with_grads


@torch.no_grad()
def cautious_mask_(
    updates: list[torch.Tensor], grads: list[torch.Tensor], eps: float, masks: list[torch.Tensor] | None = None
) -> None:
    """u <- u * 1[u g > 0] / (mean(1[u g > 0]) + eps) in place, per tensor (Levanter scale_by_cautious).

    Without a host sync: the mask is 1.0 where u g > 0, else 0.0, built in `masks` (buffers shaped as the
    updates; fresh ones when None) with two in-place passes, and its per-tensor count is its sum.
    """
    if masks is None:
        masks = [torch.empty_like(u) for u in updates]
    for u, g, mask in zip(updates, grads, masks, strict=True):
        torch.mul(u, g, out=mask)
        torch.gt(mask, 0, out=mask)
    counts = torch.stack([mask.sum() for mask in masks])  # (n_tensors,)
    numels = torch.tensor([u.numel() for u in updates], dtype=counts.dtype, device=counts.device)
    denoms = counts / numels + eps  # (n_tensors,) mean(mask) + eps
    torch._foreach_mul_(updates, masks)
    torch._foreach_div_(updates, list(denoms.unbind()))


class CautiousAdamW(StateDtypeOptimizer):
    """Adam moments and update, then Levanter's cautious mask, then decoupled decay and -lr, per param group.

    Group keys: lr, betas, eps, weight_decay. State per param: step (int), exp_avg, exp_avg_sq (float32, or
    float64 for float64 params).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.95, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

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
            if self._kernel_step(group, params, grads):
                continue
            # u from torch's fused Adam kernel into a reused buffer, the mask in another (no model-sized
            # temporaries: on CPU a fresh one costs more than a pass), then one fused pass for decay and -lr.
            out = scratch_buffers(self, params, "direction")
            updates = adam_directions_into_(self.state, params, grads, out, beta1, beta2, group["eps"])
            cautious_mask_(updates, grads, group["eps"], scratch_buffers(self, params, "mask"))
            apply_updates_(params, updates, group["lr"], group["weight_decay"])
        return loss

    def _kernel_step(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> bool:
        """The same step in two passes per tensor with cpu_kernels (float32 CPU tensors); False when not taken."""
        ms, vs = state_buffers(self.state, params, "exp_avg"), state_buffers(self.state, params, "exp_avg_sq")
        kernels = cpu_kernels.kernels_for(params, grads, ms, vs)
        if kernels is None:
            return False
        steps = advance_steps(self.state, params)
        beta1, beta2 = group["betas"]
        eps, lr, wd = group["eps"], group["lr"], group["weight_decay"]
        bc1s, bc2ss = bias_corrections(steps, beta1, beta2)
        counts = kernels.cautious_moments(grads, ms, vs, beta1, beta2, bc1s, bc2ss, eps)
        # max(numel, 1): an empty tensor (count 0 of 0) has nothing to scale, and no 0 / 0.
        scales = [1.0 / (count / max(g.numel(), 1) + eps) for count, g in zip(counts, grads, strict=True)]
        kernels.cautious_apply(params, grads, ms, vs, bc1s, bc2ss, eps, lr, wd, scales)
        return True


def build(model: nn.Module, hp: HParams) -> torch.optim.Optimizer:
    return CautiousAdamW(
        decay_param_groups(model, float(hp["wd"])),
        lr=float(hp["lr"]),
        betas=(float(hp["beta1"]), float(hp["beta2"])),
        eps=float(hp["eps"]),
    )


# PAPER.md section 3: Cautious's grid is "as NAdamW". Baseline: the paper's best 130m 1x config
# (shared/data/paper_results.json, cautious/130m/1).
PAPER_SPACE = SearchSpace(
    grid={
        "lr": (8e-3, 1.6e-2, 3.2e-2),
        "wd": (0.0, 0.1, 0.2),
        "warmup": (500, 1000, 2000, 4000),
        "beta1": (0.8, 0.9, 0.95, 0.98),
        "beta2": (0.9, 0.95, 0.98),
        "eps": (1e-25, 1e-20, 1e-15, 1e-10),
        "max_grad_norm": (0.0, 1.0, 2.0),
        "batch_size": (128, 256, 512, 1024),
    },
    baseline={
        "lr": 8e-3,
        "wd": 0.1,
        "warmup": 2000,
        "beta1": 0.95,
        "beta2": 0.98,
        "eps": 1e-15,
        "max_grad_norm": 1.0,
        "batch_size": 128,
    },
    fixed={"min_lr_ratio": 0.0},
)

# Same hyperparameters and number of values for tiny CPU scales (~640 steps of 32 x 128 tokens on tiny-130k):
# warmups and batches as AdamW's TINY_SPACE, learning rates x1.5 as AdamW's tiny grid against its paper grid.
# Baseline beta1 0.9, not the paper's 0.95: measured on tiny-130k at 1x Chinchilla (640 steps, seed 0),
# Cautious beta1 0.9 reached 1.497 against 1.541 for 0.95 (AdamW baseline: 1.868).
TINY_SPACE = SearchSpace(
    grid={
        "lr": (6e-3, 1.2e-2, 2.4e-2),
        "wd": (0.0, 0.1, 0.2),
        "warmup": (16, 32, 64, 128),
        "beta1": (0.8, 0.9, 0.95, 0.98),
        "beta2": (0.9, 0.95, 0.98),
        "eps": (1e-25, 1e-20, 1e-15, 1e-10),
        "max_grad_norm": (0.0, 1.0, 2.0),
        "batch_size": (16, 32, 64, 128),
    },
    baseline={
        "lr": 1.2e-2,
        "wd": 0.1,
        "warmup": 32,
        "beta1": 0.9,
        "beta2": 0.98,
        "eps": 1e-15,
        "max_grad_norm": 1.0,
        "batch_size": 32,
    },
    fixed={"min_lr_ratio": 0.0},
)

SPEC = OptimizerSpec(
    name="cautious",
    build=build,
    # Levanter CautiousConfig defaults (OPTIMIZERS.md 3.4: beta1 0.95, beta2 0.95, eps 1e-8; wd 0.0 is the
    # OptimizerConfig base default, which CautiousConfig keeps) where the search space gives no baseline.
    defaults={"wd": 0.0, "beta1": 0.95, "beta2": 0.95, "eps": 1e-8},
    spaces={"paper": PAPER_SPACE, "tiny": TINY_SPACE},
    routing="all parameters: Cautious AdamW (mask per tensor on the Adam update); decayed: hidden matrices and "
    "lm_head; not decayed: embedding, norms; clipped by the trainer's global norm",
    reference="Levanter scale_by_cautious (stanford-crfm/levanter optim/cautious.py)",
    cpu_kernels=True,
)
