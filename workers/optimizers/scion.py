"""Scion as the paper ran it: Levanter's ScionConfig (OPTIMIZERS.md 3.8, "Paper (Levanter) variant").

Hidden 2-D matrices (role "matrix"), an unconstrained Scion step with decoupled weight decay:
    buf <- momentum buf + (1 - momentum) g   (an EMA with the usual beta convention, not the official
                                              Scion's alpha = 1 - beta)
    theta <- theta - lr (sqrt(max(1, out/in)) NS(buf; scion_eps, backend_steps) + wd theta)
Embedding, lm_head and norms, Signum at lr * scion_to_signum_lr:
    m <- beta1 m + (1 - beta1) g_clipped;  theta <- theta - lr_s (sign(m) + wd theta)
with Levanter's decay mask (lm_head decayed; embedding and norms not). The global-norm clip applies to the
Signum part's gradients only (LV-scion: the clip sits in `signum_transform`); the matrices are not clipped.
Schedule: linear warmup-stable-decay, warmup 0 (PAPER.md section 3).

Newton-Schulz steps: the hyperparameter `backend_steps`, default 10. Evidence: Levanter's ScionConfig with the
`scion_to_signum_lr` and `scion_epsilon` the paper tunes (stanford-crfm/levanter commit
9af9cf88e78993e5030ecb91a4ca0e54d1cc9832, src/levanter/optim/scion.py, `ScionConfig.backend_steps: int = 10`, handed
to `scale_with_scion(self.momentum, self.backend_steps, self.scion_epsilon)`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from workers.optimizers._newton_schulz import newton_schulz_many
from workers.optimizers.base import HParams, OptimizerSpec, SearchSpace, named_params_by_role
from workers.optimizers.functional import apply_updates_, state_buffers
from workers.optimizers.muon import RuleOptimizer, backend_steps, muon_scale, params_by_decay


class Scion(RuleOptimizer):
    """Levanter's Scion: rule "scion" on hidden matrices, rule "signum" (clipped) on everything else.

    Group keys: "scion": lr, weight_decay, momentum, ns_steps, ns_eps; "signum": lr, weight_decay, beta1.
    """

    def __init__(self, param_groups: Sequence[dict[str, Any]], *, max_grad_norm: float = 0.0) -> None:
        super().__init__(param_groups, max_grad_norm=max_grad_norm, clip_sets=[("signum",)])

    def rule_scion(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        for p in params:
            if p.ndim != 2:
                raise ValueError(f"Scion's matrix rule takes 2-D (out, in) weights, got shape {tuple(p.shape)}")
        bufs = state_buffers(self.state, params, "momentum_buffer")
        torch._foreach_lerp_(bufs, grads, 1 - group["momentum"])  # m + (1 - beta)(g - m) = beta m + (1 - beta) g
        orth = newton_schulz_many(bufs, group["ns_steps"], group["ns_eps"])
        scales = [muon_scale(p) for p in params]
        updates = [o * s if s != 1.0 else o for o, s in zip(orth, scales, strict=True)]
        apply_updates_(params, updates, group["lr"], group["weight_decay"])

    def rule_signum(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        bufs = state_buffers(self.state, params, "momentum_buffer")
        torch._foreach_lerp_(bufs, grads, 1 - group["beta1"])
        apply_updates_(params, torch._foreach_sign(bufs), group["lr"], group["weight_decay"])


def scion_param_groups(model: nn.Module, hp: HParams) -> list[dict[str, Any]]:
    """Matrices -> "scion" (decayed); embedding, head, norms -> "signum" at lr*scion_to_signum_lr, masked decay."""
    lr, wd = float(hp["lr"]), float(hp["wd"])
    roles = named_params_by_role(model)
    signum = {"rule": "signum", "lr": lr * float(hp["scion_to_signum_lr"]), "beta1": float(hp["beta1"])}
    return [
        {
            "rule": "scion",
            "params": [p for _, p in roles["matrix"]],
            "lr": lr,
            "weight_decay": wd,
            "momentum": float(hp["momentum"]),
            "ns_steps": backend_steps(hp),  # Levanter ScionConfig.backend_steps (module docstring)
            "ns_eps": float(hp["scion_eps"]),
        },
        {**signum, "params": params_by_decay(roles, decayed=True, exclude="matrix"), "weight_decay": wd},
        {**signum, "params": params_by_decay(roles, decayed=False, exclude="matrix"), "weight_decay": 0.0},
    ]


def build(model: nn.Module, hp: HParams) -> torch.optim.Optimizer:
    return Scion(scion_param_groups(model, hp), max_grad_norm=float(hp["max_grad_norm"]))


# PAPER.md section 3 (Scion's Phase I grid; Marin's 130m Scion sweep lists decay and scion_to_signum_lr in
# steps of 0.2 and 0.1); baseline = the paper's tuned 130m 1x config (OPTIMIZERS.md section 1, P-tex-scion;
# paper_results.json scion/130m/1). Warmup is fixed at 0.
PAPER_SPACE = SearchSpace(
    grid={
        "lr": (8e-3, 1.6e-2, 3.2e-2, 6.4e-2, 0.128),
        "wd": (0.0, 0.1, 0.2),
        "momentum": (0.8, 0.9, 0.95, 0.98),
        "beta1": (0.8, 0.9, 0.95, 0.98),
        "scion_eps": (1e-20, 1e-15, 1e-10, 1e-5),
        "max_grad_norm": (0.0, 1.0, 2.0),
        "decay": (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
        "scion_to_signum_lr": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6),
        "batch_size": (128, 256, 512, 1024),
    },
    baseline={
        "lr": 1.6e-2,
        "wd": 0.1,
        "momentum": 0.95,
        "beta1": 0.95,
        "scion_eps": 1e-15,
        "max_grad_norm": 1.0,
        "decay": 0.8,
        "scion_to_signum_lr": 0.2,
        "batch_size": 128,
    },
    fixed={"warmup": 0, "min_lr_ratio": 0.0},
)

# Same hyperparameters and values for tiny CPU scales; the batch grid shrinks as AdamW's. Baseline lr 0.032:
# on tiny-130k at 0.25x Chinchilla (160 steps, eval loss) lr 0.016 gave 2.00, 0.032 1.85 (AdamW: 2.47).
TINY_SPACE = SearchSpace(
    grid={**PAPER_SPACE.grid, "batch_size": (16, 32, 64, 128)},
    baseline={**PAPER_SPACE.baseline, "lr": 3.2e-2, "batch_size": 32},
    fixed={"warmup": 0, "min_lr_ratio": 0.0},
)

SPEC = OptimizerSpec(
    name="scion",
    build=build,
    # The paper's tuned 130m 1x values (OPTIMIZERS.md section 1); warmup 0 overrides the trainer's default.
    defaults={
        "wd": 0.1,
        "momentum": 0.95,
        "beta1": 0.95,
        "scion_eps": 1e-15,
        "scion_to_signum_lr": 0.2,
        "decay": 0.8,
        "warmup": 0,
        "backend_steps": 10,  # Levanter ScionConfig.backend_steps (module docstring)
    },
    spaces={"paper": PAPER_SPACE, "tiny": TINY_SPACE},
    routing=(
        "hidden matrices: Scion (EMA momentum, NS x backend_steps (10), scale sqrt(max(1, out/in))), decayed, "
        "not clipped; "
        "embedding, lm_head, norms: Signum (sign of an EMA with beta1) at lr*scion_to_signum_lr, clipped by "
        "their own global norm; decayed: lm_head; not decayed: embedding, norms"
    ),
    schedule="wsd",
    clips_itself=True,
    reference="Levanter ScionConfig (stanford-crfm/levanter optim/scion.py, paper snapshot)",
)
