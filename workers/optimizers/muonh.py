"""MuonH: Muon on the Hyperball (PAPER.md section 7, OPTIMIZERS.md section 4; Marin Levanter `muonh.py`).

Hidden matrices (role "matrix"): Muon's direction without its shape scale, then the hyperball step:
    buf <- momentum buf + g;  u = NS(g + momentum buf; muon_eps, backend_steps) (Levanter's sum-form Nesterov)
    W <- R normalize(W - lr R normalize(u)),  R = ||W_0||_F stored at the first step
(the sqrt(max(1, out/in)) scale is dropped: normalize(u) would cancel it anyway). lm_head: AdamH at the same lr
(Marin routes lm_head to "adamh"). Embedding and norms: plain Adam at adam_lr. No weight decay anywhere.
Clipping follows Marin's code: one global-norm clip per sub-chain (MuonH matrices, AdamH head, Adam part), each
over its own subset. Schedule: linear decay, as Muon's and as Marin's MuonH launchers ("linear").

Newton-Schulz steps: the hyperparameter `backend_steps`, default 5. Evidence: Marin's MuonHConfig
(marin-community/marin commit ab6e485c6250984825d2ecbb983b3c02e247e062, lib/levanter/src/levanter/optim/muonh.py,
`MuonHConfig.backend_steps: int = 5`, handed to `scale_with_muonh(..., self.backend_steps, ...)`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from workers.optimizers._newton_schulz import newton_schulz_many
from workers.optimizers.adamh import adam_part, adamh_rule, hyperball_radii, hyperball_step_
from workers.optimizers.base import HParams, OptimizerSpec, SearchSpace, named_params_by_role
from workers.optimizers.muon import RuleOptimizer, adam_rule, backend_steps, muon_directions


class MuonH(RuleOptimizer):
    """Rules "muonh" (hidden matrices), "adamh" (lm_head) and "adam" (embedding, norms), each clipped alone.

    Group keys: "muonh": lr, momentum, nesterov, ns_steps, ns_eps; "adamh": lr, betas, eps; "adam": lr, betas,
    eps, weight_decay (0).
    """

    def __init__(self, param_groups: Sequence[dict[str, Any]], *, max_grad_norm: float = 0.0) -> None:
        super().__init__(param_groups, max_grad_norm=max_grad_norm, clip_sets=[("muonh",), ("adamh",), ("adam",)])

    def rule_adamh(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        adamh_rule(self, group, params, grads)

    def rule_adam(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        adam_rule(self, group, params, grads)

    def rule_muonh(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        for p in params:
            if p.ndim != 2:
                raise ValueError(f"MuonH's matrix rule takes 2-D (out, in) weights, got shape {tuple(p.shape)}")
        directions = muon_directions(self.state, params, grads, group["momentum"], group["nesterov"])
        orth = newton_schulz_many(directions, group["ns_steps"], group["ns_eps"])
        hyperball_step_(params, orth, hyperball_radii(self.state, params), group["lr"])


def build(model: nn.Module, hp: HParams) -> torch.optim.Optimizer:
    roles = named_params_by_role(model)
    lr = float(hp["lr"])
    groups: list[dict[str, Any]] = [
        {
            "rule": "muonh",
            "params": [p for _, p in roles["matrix"]],
            "lr": lr,
            "momentum": float(hp["momentum"]),
            "nesterov": True,  # Levanter MuonHConfig default
            "ns_steps": backend_steps(hp),  # Marin MuonHConfig.backend_steps (module docstring)
            "ns_eps": float(hp["muon_eps"]),
        },
        {
            "rule": "adamh",
            "params": [p for _, p in roles["head"]],
            "lr": lr,  # Marin's adamh_transform uses the MuonH learning rate
            "betas": (float(hp["beta1"]), float(hp["beta2"])),
            "eps": float(hp["eps"]),
        },
        adam_part(roles, hp),
    ]
    return MuonH(groups, max_grad_norm=float(hp["max_grad_norm"]))


# No paper grid exists for MuonH. Derived from Muon's Phase I grid (PAPER.md section 3): the authors' docstring
# says the MuonH lr "should be sqrt(learning_rate * weight_decay)" of the weight-decay config, so Muon's lr grid
# {8e-3 .. 0.128} at wd 0.1 maps to {0.028, 0.04, 0.057, 0.08, 0.113}; the grid is shifted one sqrt(2) step down
# to hold 0.02, the lr of Marin's MuonH 130m launcher (lr 0.02, adam_lr 0.008, beta1 0.9, beta2 0.98,
# eps 1e-15, momentum 0.95, muon_eps 1e-5, clip 1, linear schedule, warmup 10%), which is the baseline.
# Muon's warmup is fixed at 0, but Marin's MuonH runs warm up over 10% of the steps, so warmup is searched
# (500 = 10% of the 130m 1x run's ~5000 steps). adam_lr takes AdamW's lr grid. No wd (PAPER.md section 7).
PAPER_SPACE = SearchSpace(
    grid={
        "lr": (2e-2, 2.8e-2, 4e-2, 5.7e-2, 8e-2),
        "adam_lr": (4e-3, 8e-3, 1.6e-2, 3.2e-2),
        "momentum": (0.8, 0.9, 0.95, 0.98),
        "beta1": (0.8, 0.9, 0.95, 0.98),
        "beta2": (0.9, 0.95, 0.98),
        "eps": (1e-25, 1e-20, 1e-15, 1e-10),
        "muon_eps": (1e-25, 1e-20, 1e-15, 1e-10, 1e-5),
        "max_grad_norm": (0.0, 1.0, 2.0),
        "warmup": (0, 250, 500, 1000),
        "decay": (0.2, 0.4, 0.6, 0.8, 1.0),
        "batch_size": (128, 256, 512, 1024),
    },
    baseline={
        "lr": 2e-2,
        "adam_lr": 8e-3,
        "momentum": 0.95,
        "beta1": 0.9,
        "beta2": 0.98,
        "eps": 1e-15,
        "muon_eps": 1e-5,
        "max_grad_norm": 1.0,
        "warmup": 500,
        "decay": 1.0,
        "batch_size": 128,
    },
    fixed={"min_lr_ratio": 0.0},
)

# Tiny CPU scales (~640 steps of 32 x 128 tokens on tiny-130k): warmups and batches shrink as AdamW's (64 steps
# = 10% of a 1x run). Measured there at 0.25x Chinchilla (160 steps, eval loss; AdamW's tiny baseline 2.47): as
# for AdamH the Adam part's lr matters most (the matrices' norms stay at their small init): (lr, adam_lr) =
# (0.02, 0.012) 3.01, (0.08, 0.024) 2.68, (0.04, 0.06) 2.43, (0.08, 0.06) 2.39, (0.08, 0.15) 2.16,
# (0.08, 0.3) 2.08, (0.08, 0.64) 2.09, (0.16, 0.32) 2.05. The lr grid is the paper's shifted up two sqrt(2) steps.
TINY_SPACE = SearchSpace(
    grid={
        **PAPER_SPACE.grid,
        "lr": (4e-2, 5.7e-2, 8e-2, 0.113, 0.16),
        "adam_lr": (8e-2, 0.16, 0.32, 0.64),
        "warmup": (0, 16, 32, 64),
        "batch_size": (16, 32, 64, 128),
    },
    baseline={**PAPER_SPACE.baseline, "lr": 8e-2, "adam_lr": 0.32, "warmup": 64, "batch_size": 32},
    fixed={"min_lr_ratio": 0.0},
)

SPEC = OptimizerSpec(
    name="muonh",
    build=build,
    # Marin's MuonH 130m launcher values (see PAPER_SPACE).
    defaults={
        "adam_lr": 8e-3,
        "momentum": 0.95,
        "beta1": 0.9,
        "beta2": 0.98,
        "eps": 1e-15,
        "muon_eps": 1e-5,
        "backend_steps": 5,  # Marin MuonHConfig.backend_steps (module docstring)
    },
    spaces={"paper": PAPER_SPACE, "tiny": TINY_SPACE},
    routing=(
        "hidden matrices: MuonH (Nesterov NS x backend_steps (5), no shape scale, hyperball step keeping "
        "||W||_F = ||W_0||_F); "
        "lm_head: AdamH at the same lr; embedding, norms: Adam at adam_lr; no weight decay; "
        "clipped per sub-chain (matrices, head, Adam part)"
    ),
    schedule="linear",
    clips_itself=True,
    reference="Marin Levanter MuonHConfig (marin-community/marin lib/levanter/src/levanter/optim/muonh.py)",
    cpu_kernels=True,
)
