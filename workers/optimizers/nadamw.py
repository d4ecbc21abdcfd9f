"""NAdamW as the paper ran it: optax `scale_by_adam(nesterov=True)` with Levanter's decay mask (OPTIMIZERS.md 3.2).

Rule (optax, t = 1-based step):
    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
    m_hat = b1 m / (1 - b1^(t+1)) + (1-b1) g / (1 - b1^t);  v_hat = v / (1 - b2^t)
    theta <- theta - lr (m_hat / (sqrt(v_hat) + eps) + wd theta)
This is NOT torch.optim.NAdam: torch applies Dozat's momentum-decay schedule mu_t = b1 (1 - 0.5 0.96^(t psi)),
which optax (and so the paper) does not. With psi = 1e9 the schedule underflows to mu_t = b1 and torch's formula
reduces to the one above; the tests use that only as a cross-check oracle.

Gradient clipping by global norm over all parameters is the trainer's (Levanter's AdamConfig puts
`clip_by_global_norm` first in the chain). Decayed: hidden matrices and lm_head; not decayed: embedding, norms.

The Adam step (`adam_step_`: torch's fused Adam kernel, or _foreach ops for bf16 params) is functional's, shared
with the Adam parts of the composite optimizers. This module also holds `StateDtypeOptimizer`, the
base that keeps fp32 state for bf16 params on reload, and `params_with_grads`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from workers.optimizers.base import HParams, OptimizerSpec, SearchSpace, decay_param_groups
from workers.optimizers.functional import adam_step_, restore_state_dtypes

# ---- shared by the Adam-family optimizers of this package (NAdamW, Cautious, MARS) and Lion --------------------


class StateDtypeOptimizer(torch.optim.Optimizer):
    """A torch optimizer whose `load_state_dict` keeps the saved dtypes of floating-point state.

    torch.optim.Optimizer.load_state_dict casts every floating-point state tensor to its parameter's dtype, which
    would round the float32 state of bf16 parameters (functional.state_zeros) to bf16 and break a bitwise resume.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        restore_state_dtypes(self, state_dict)


def params_with_grads(group: Mapping[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(params of `group` that have a gradient, those gradients in the state dtype).

    The state dtype is float32, or float64 for float64 params (functional.state_zeros). A gradient already in that
    dtype is returned as is (no copy), so callers must not modify the gradients in place.
    """
    params = [p for p in group["params"] if p.grad is not None]
    grads = [p.grad.to(torch.float64 if p.dtype == torch.float64 else torch.float32) for p in params]
    return params, grads


# ---- NAdamW ----------------------------------------------------------------------------------------------------


class NAdamW(StateDtypeOptimizer):
    """optax scale_by_adam(nesterov=True) + add_decayed_weights + scale(-lr), per param group.

    Group keys: lr, betas, eps, weight_decay. State per param: step (int), exp_avg, exp_avg_sq (float32, or
    float64 for float64 params).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
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
            # torch's fused Adam kernel with the Nesterov numerator folded in (functional.fused_adam_).
            adam_step_(
                self.state, params, grads, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                weight_decay=group["weight_decay"], nesterov=True,
            )  # fmt: skip
        return loss


def build(model: nn.Module, hp: HParams) -> torch.optim.Optimizer:
    return NAdamW(
        decay_param_groups(model, float(hp["wd"])),
        lr=float(hp["lr"]),
        betas=(float(hp["beta1"]), float(hp["beta2"])),
        eps=float(hp["eps"]),
    )


# PAPER.md section 3: "as AdamW but lr {8e-3, 1.6e-2, 3.2e-2}, beta1 {0.8, 0.9, 0.95, 0.98}". Baseline: the paper's
# best 130m 1x config (shared/data/paper_results.json, nadamw/130m/1).
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
        "eps": 1e-25,
        "max_grad_norm": 1.0,
        "batch_size": 128,
    },
    fixed={"min_lr_ratio": 0.0},
)

# Same hyperparameters and number of values for tiny CPU scales (~640 steps of 32 x 128 tokens on tiny-130k):
# warmups and batches as AdamW's TINY_SPACE, learning rates x1.5 as AdamW's tiny grid against its paper grid.
# Baseline beta1 0.9, not the paper's 0.95: measured on tiny-130k at 1x Chinchilla (640 steps, seed 0),
# NAdamW beta1 0.9 reached 1.815 against 1.977 for 0.95 (AdamW baseline: 1.868).
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
        "eps": 1e-25,
        "max_grad_norm": 1.0,
        "batch_size": 32,
    },
    fixed={"min_lr_ratio": 0.0},
)

SPEC = OptimizerSpec(
    name="nadamw",
    build=build,
    # Levanter AdamConfig defaults (OPTIMIZERS.md 3.1) where the search space gives no baseline.
    defaults={"wd": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8},
    spaces={"paper": PAPER_SPACE, "tiny": TINY_SPACE},
    routing="all parameters: NAdamW (optax nesterov form); decayed: hidden matrices and lm_head; "
    "not decayed: embedding, norms; clipped by the trainer's global norm",
    reference="optax scale_by_adam(nesterov=True) via Levanter AdamConfig(nesterov=True); cross-check oracle "
    "torch.optim.NAdam(momentum_decay=1e9, decoupled_weight_decay=True)",
)
