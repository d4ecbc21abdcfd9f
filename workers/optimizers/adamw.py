"""AdamW: torch's own, with Levanter's weight-decay mask (OPTIMIZERS.md section 3.1).

Rule: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; theta <- theta - lr (m_hat / (sqrt(v_hat) + eps) + wd theta).
torch.optim.AdamW computes exactly this (decoupled decay lr*wd*theta, eps outside the sqrt), like optax.
Clipping by global norm over all parameters is the trainer's (the paper's chain clips first).
"""

from __future__ import annotations

import torch
from torch import nn

from workers.optimizers.base import HParams, OptimizerSpec, SearchSpace, decay_param_groups
from workers.optimizers.functional import advance_adam, apply_updates_, state_dtype_grad


def fused_available(model: nn.Module) -> bool:
    """torch's fused AdamW runs on CPU and CUDA for floating-point parameters; it is the fastest path."""
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in model.parameters())


class AdamW32(torch.optim.Optimizer):
    """The same AdamW with float32 moments for low-precision (bf16) parameters.

    torch.optim.AdamW keeps its moments in the parameter's dtype; with bf16 parameters that loses the
    small second moments the paper's eps of 1e-20..1e-25 is tuned against, so state stays fp32 here.
    """

    def __init__(self, params: list[dict[str, object]], lr: float, betas: tuple[float, float], eps: float) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": 0.0})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            params = [p for p in group["params"] if p.grad is not None]
            grads = [state_dtype_grad(p) for p in params]
            # _foreach ops over the group, like torch.optim.AdamW's multi-tensor path (functional.advance_adam).
            updates = advance_adam(self.state, params, grads, beta1, beta2, group["eps"])
            apply_updates_(params, updates, group["lr"], group["weight_decay"])


def build(model: nn.Module, hp: HParams) -> torch.optim.Optimizer:
    if any(p.dtype not in (torch.float32, torch.float64) for p in model.parameters()):
        return AdamW32(
            decay_param_groups(model, float(hp["wd"])),
            lr=float(hp["lr"]),
            betas=(float(hp["beta1"]), float(hp["beta2"])),
            eps=float(hp["eps"]),
        )
    return torch.optim.AdamW(
        decay_param_groups(model, float(hp["wd"])),
        lr=float(hp["lr"]),
        betas=(float(hp["beta1"]), float(hp["beta2"])),
        eps=float(hp["eps"]),
        fused=fused_available(model),
    )


# PAPER.md section 3 (Phase I grid) with the 130m 1x best as baseline (PAPER.md section 6).
PAPER_SPACE = SearchSpace(
    grid={
        "lr": (4e-3, 8e-3, 1.6e-2, 3.2e-2),
        "wd": (0.0, 0.1, 0.2),
        "warmup": (500, 1000, 2000, 4000),
        "beta1": (0.9, 0.95, 0.98),
        "beta2": (0.9, 0.95, 0.98),
        "eps": (1e-25, 1e-20, 1e-15, 1e-10),
        "max_grad_norm": (0.0, 1.0, 2.0),
        "batch_size": (128, 256, 512, 1024),
    },
    baseline={
        "lr": 8e-3,
        "wd": 0.1,
        "warmup": 2000,
        "beta1": 0.9,
        "beta2": 0.98,
        "eps": 1e-20,
        "max_grad_norm": 1.0,
        "batch_size": 128,
    },
    fixed={"min_lr_ratio": 0.0},
)

# Same hyperparameters and number of values, for tiny CPU scales: a run has a few hundred steps of 32 x 128
# tokens, so warmups and batches shrink; learning rates around the DESIGN.md calibration (lr 1e-2).
TINY_SPACE = SearchSpace(
    grid={
        "lr": (3e-3, 6e-3, 1.2e-2, 2.4e-2),
        "wd": (0.0, 0.1, 0.2),
        "warmup": (16, 32, 64, 128),
        "beta1": (0.9, 0.95, 0.98),
        "beta2": (0.9, 0.95, 0.98),
        "eps": (1e-25, 1e-20, 1e-15, 1e-10),
        "max_grad_norm": (0.0, 1.0, 2.0),
        "batch_size": (16, 32, 64, 128),
    },
    baseline={
        "lr": 6e-3,  # measured at tiny-130k, 1x: 1.743 against 1.868 at 1.2e-2 (seed 0)
        "wd": 0.1,
        "warmup": 32,
        "beta1": 0.9,
        "beta2": 0.98,
        "eps": 1e-20,
        "max_grad_norm": 1.0,
        "batch_size": 32,
    },
    fixed={"min_lr_ratio": 0.0},
)

SPEC = OptimizerSpec(
    name="adamw",
    build=build,
    # Levanter defaults (OPTIMIZERS.md section 3.1) where the search space gives no baseline.
    defaults={"wd": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8},
    spaces={"paper": PAPER_SPACE, "tiny": TINY_SPACE},
    routing="all parameters: AdamW; decayed: hidden matrices and lm_head; not decayed: embedding, norms",
    reference="torch.optim.AdamW (fused where available)",
)
