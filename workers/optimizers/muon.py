"""Muon as the paper ran it: Levanter's MuonConfig (OPTIMIZERS.md sections 1 and 3.7).

Hidden 2-D matrices (role "matrix"):
    buf <- momentum buf + g;  u = g + momentum buf (Nesterov);  O = NS(u; muon_eps, backend_steps)
    theta <- theta - lr (sqrt(max(1, out/in)) O + wd theta)
Embedding, lm_head and norms: AdamW at lr * muon_to_adam_lr with (beta1, beta2, eps), weight decay with
Levanter's mask (lm_head decayed; embedding and norms not). The global-norm clip (max_grad_norm) applies to
the AdamW part's gradients only, its norm taken over that subset; the matrices are never clipped
(LV-muon: the clip sits in `adamw_transform` only). Schedule: linear warmup-stable-decay, warmup 0.

Newton-Schulz steps: the hyperparameter `backend_steps`, default 10. Evidence: the Levanter MuonConfig that takes
the `muon_to_adam_lr` the paper's sweep passes defaults to 10 (the authors' fork WhenWen/levanter, commit
1aae79ea5053fb21f2ff458a3b4d885062c9b158, src/levanter/optim/muon.py: `MuonConfig.backend_steps: int = 10`,
handed to `scale_with_muon(self.momentum, self.nesterov, self.backend_steps)`). Later upstream versions
(stanford-crfm/levanter 9af9cf88e78993e5030ecb91a4ca0e54d1cc9832) replaced muon_to_adam_lr by adam_lr and default
to 5: not the version the paper's sweep ran. 5 and 10 steps give updates ~36% apart on 512 x 2048 (issue 14).

Levanter keeps the momentum in sum form (buf = mu buf + g) where KJ and torch.optim.Muon keep an EMA
(buf.lerp_(g, 1 - mu)); the two are exactly proportional and NS divides by the Frobenius norm, so they differ
only through the NS epsilon (OPTIMIZERS.md section 2). We keep Levanter's form because `muon_eps` was tuned
against it (PAPER.md section 3).

This module also holds `RuleOptimizer`, the composite optimizer that Scion, AdamH and MuonH build on: one
torch optimizer whose param groups carry a "rule" key (like KJ's MuonWithAuxAdam).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from workers.optimizers._newton_schulz import newton_schulz_many
from workers.optimizers.base import HParams, OptimizerSpec, SearchSpace, is_decayed, named_params_by_role
from workers.optimizers.functional import (
    adam_step_,
    apply_updates_,
    clip_by_global_norm_into_,
    clip_factor,
    restore_state_dtypes,
    scratch_buffers,
    state_buffers,
    state_dtype_grad,
)


class RuleOptimizer(torch.optim.Optimizer):
    """One optimizer over all parameters; every param group names its update rule in group["rule"].

    Subclasses define a method `rule_<name>(group, params, grads)` per rule; step() hands each group its
    parameters that have gradients and those gradients in the state dtype (float32, float64 for float64
    params). Each group's peak learning rate is its own "lr" (the trainer rescales it by the schedule every
    step). Rules are methods, not stored callables, so the optimizer pickles and deep-copies.

    `clip_sets` lists the rules whose gradients are clipped together by global norm (`max_grad_norm`, 0 = off):
    one joint norm per set, as one optax `clip_by_global_norm` per sub-chain of a `multi_transform`. Clipped
    gradients are copies; `p.grad` is never modified. A set made only of `scaled_clip_rules` gets no copies: its
    rules receive the raw gradients and apply the factor `self.clip_scales[rule]` (0-d) themselves, where a
    kernel can fold it into its own pass (AdamH with cpu_kernels).
    """

    scaled_clip_rules: tuple[str, ...] = ()

    def __init__(
        self,
        param_groups: Sequence[dict[str, Any]],
        *,
        max_grad_norm: float = 0.0,
        clip_sets: Sequence[Sequence[str]] = (),
    ) -> None:
        groups = [g for g in param_groups if g["params"]]
        super().__init__(groups, defaults={})
        self.max_grad_norm = float(max_grad_norm)
        self.clip_sets = [tuple(s) for s in clip_sets]
        for group in self.param_groups:
            if not callable(getattr(self, f"rule_{group['rule']}", None)):
                raise ValueError(f"{type(self).__name__} has no update rule {group['rule']!r}")

    def _grads(self) -> list[tuple[list[torch.Tensor], list[torch.Tensor]]]:
        """Per param group: (params with a gradient, their gradients in the state dtype, clipped if asked)."""
        per_group: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            per_group.append((params, [state_dtype_grad(p) for p in params]))
        self.clip_scales: dict[str, torch.Tensor] = {}
        for rules in self.clip_sets if self.max_grad_norm > 0 else ():
            subset = [i for i, group in enumerate(self.param_groups) if group["rule"] in rules]
            if all(rule in self.scaled_clip_rules for rule in rules):
                scale = clip_factor([g for i in subset for g in per_group[i][1]], self.max_grad_norm)
                self.clip_scales.update(dict.fromkeys(rules, scale))
                continue
            params = [p for i in subset for p in per_group[i][0]]
            # Clipped gradients go to reused buffers (functional.scratch_buffers): p.grad stays the raw gradient.
            out = scratch_buffers(self, params, "clipped_grad")
            clip_by_global_norm_into_([g for i in subset for g in per_group[i][1]], self.max_grad_norm, out)
            for i in subset:
                n = len(per_group[i][0])
                per_group[i] = (per_group[i][0], out[:n])
                out = out[n:]
        return per_group

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, (params, grads) in zip(self.param_groups, self._grads(), strict=True):
            if params:
                getattr(self, f"rule_{group['rule']}")(group, params, grads)
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch casts loaded floating-point state to the param's dtype; keep the saved dtypes instead.

        With bf16 params the state is float32 (functional.state_zeros) and must come back float32 to resume
        bitwise; torch.optim.Optimizer.load_state_dict would round it to bf16.
        """
        super().load_state_dict(state_dict)
        restore_state_dtypes(self, state_dict)


# ---- update rules shared with Scion, AdamH and MuonH ------------------------------------------------------


def muon_scale(p: torch.Tensor) -> float:
    """sqrt(max(1, out/in)) for a (out, in) weight: KJ's and Levanter's default shape scale (OPTIMIZERS.md 3.7)."""
    return math.sqrt(max(1.0, p.shape[0] / p.shape[1]))


def muon_directions(
    state: Mapping[torch.Tensor, dict[str, Any]],
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    momentum: float,
    nesterov: bool,
) -> list[torch.Tensor]:
    """Advance Levanter's sum-form momentum (buf = mu buf + g) and return g + mu buf (Nesterov) or buf."""
    bufs = state_buffers(state, params, "momentum_buffer")
    torch._foreach_mul_(bufs, momentum)
    torch._foreach_add_(bufs, list(grads))
    if nesterov:
        return list(torch._foreach_add(list(grads), bufs, alpha=momentum))
    return bufs


def adam_rule(optimizer: torch.optim.Optimizer, group: dict[str, Any], params: list, grads: list) -> None:
    """AdamW on one param group: optax scale_by_adam (bias-corrected, eps outside the sqrt), decay, -lr.

    Keys: lr, betas, eps, weight_decay. A per-param integer "step" gives the bias correction (optax `count`).
    One fused pass per tensor where the dtypes allow it, else _foreach ops over the group (functional.adam_step_).
    """
    beta1, beta2 = group["betas"]
    adam_step_(
        optimizer.state, params, grads, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
        weight_decay=group["weight_decay"],
    )  # fmt: skip


# ---- Muon ---------------------------------------------------------------------------------------------------


class Muon(RuleOptimizer):
    """Levanter's Muon: rule "muon" on hidden matrices, rule "adamw" (clipped) on everything else.

    Group keys: "muon": lr, weight_decay, momentum, nesterov, ns_steps, ns_eps; "adamw": lr, betas, eps,
    weight_decay.
    """

    def __init__(self, param_groups: Sequence[dict[str, Any]], *, max_grad_norm: float = 0.0) -> None:
        super().__init__(param_groups, max_grad_norm=max_grad_norm, clip_sets=[("adamw",)])

    def rule_adamw(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        adam_rule(self, group, params, grads)

    def rule_muon(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        for p in params:
            if p.ndim != 2:
                raise ValueError(f"Muon's matrix rule takes 2-D (out, in) weights, got shape {tuple(p.shape)}")
        directions = muon_directions(self.state, params, grads, group["momentum"], group["nesterov"])
        orth = newton_schulz_many(directions, group["ns_steps"], group["ns_eps"])
        scales = [muon_scale(p) for p in params]
        scaled = [o * s if s != 1.0 else o for o, s in zip(orth, scales, strict=True)]
        apply_updates_(params, scaled, group["lr"], group["weight_decay"])


def backend_steps(hp: HParams) -> int:
    """The `backend_steps` hyperparameter (Newton-Schulz iterations) of Muon, Scion and MuonH, checked >= 1."""
    steps = int(hp["backend_steps"])
    if steps < 1:
        raise ValueError(f"backend_steps must be at least 1, got {steps}")
    return steps


def muon_param_groups(model: nn.Module, hp: HParams) -> list[dict[str, Any]]:
    """Matrices -> "muon" (all decayed); embedding, head, norms -> "adamw" at lr*muon_to_adam_lr, masked decay."""
    lr, wd = float(hp["lr"]), float(hp["wd"])
    adam_lr = lr * float(hp["muon_to_adam_lr"])
    roles = named_params_by_role(model)
    adam = {
        "rule": "adamw",
        "lr": adam_lr,
        "betas": (float(hp["beta1"]), float(hp["beta2"])),
        "eps": float(hp["eps"]),
    }
    return [
        {
            "rule": "muon",
            "params": [p for _, p in roles["matrix"]],
            "lr": lr,
            "weight_decay": wd,
            "momentum": float(hp["momentum"]),
            "nesterov": True,  # Levanter default (nesterov=True), not swept by the paper
            "ns_steps": backend_steps(hp),  # Levanter MuonConfig.backend_steps (module docstring)
            "ns_eps": float(hp["muon_eps"]),
        },
        {**adam, "params": params_by_decay(roles, decayed=True, exclude="matrix"), "weight_decay": wd},
        {**adam, "params": params_by_decay(roles, decayed=False, exclude="matrix"), "weight_decay": 0.0},
    ]


def params_by_decay(
    roles: Mapping[str, Iterable[tuple[str, nn.Parameter]]], *, decayed: bool, exclude: str | tuple[str, ...]
) -> list[nn.Parameter]:
    """Params of every role not in `exclude` whose decay-mask value (base.is_decayed) equals `decayed`."""
    skip = (exclude,) if isinstance(exclude, str) else exclude
    return [p for role, pairs in roles.items() if role not in skip and is_decayed(role) == decayed for _, p in pairs]


def build(model: nn.Module, hp: HParams) -> torch.optim.Optimizer:
    return Muon(muon_param_groups(model, hp), max_grad_norm=float(hp["max_grad_norm"]))


# PAPER.md section 3 (Muon's Phase I grid); baseline = the paper's tuned 130m 1x config (OPTIMIZERS.md section 1,
# P-tex-muon; paper_results.json muon/130m/1: muon_to_adam_lr 0.2, i.e. adam lr 0.0032). Warmup is fixed at 0.
PAPER_SPACE = SearchSpace(
    grid={
        "lr": (8e-3, 1.6e-2, 3.2e-2, 6.4e-2, 0.128),
        "wd": (0.0, 0.1, 0.2),
        "momentum": (0.8, 0.9, 0.95, 0.98),
        "beta1": (0.8, 0.9, 0.95, 0.98),
        "beta2": (0.9, 0.95, 0.98),
        "eps": (1e-25, 1e-20, 1e-15, 1e-10),
        "muon_eps": (1e-25, 1e-20, 1e-15, 1e-10, 1e-5),
        "max_grad_norm": (0.0, 1.0, 2.0),
        "decay": (0.2, 0.4, 0.6, 0.8, 1.0),
        "muon_to_adam_lr": (0.1, 0.2, 0.3),
        "batch_size": (128, 256, 512, 1024),
    },
    baseline={
        "lr": 1.6e-2,
        "wd": 0.1,
        "momentum": 0.95,
        "beta1": 0.8,
        "beta2": 0.98,
        "eps": 1e-15,
        "muon_eps": 1e-5,
        "max_grad_norm": 1.0,
        "decay": 0.8,
        "muon_to_adam_lr": 0.2,
        "batch_size": 128,
    },
    fixed={"warmup": 0, "min_lr_ratio": 0.0},
)

# Same hyperparameters and values for tiny CPU scales (~640 steps of 32 x 128 tokens on tiny-130k); the batch
# grid shrinks as AdamW's. Baseline lr 0.032: on tiny-130k at 0.25x Chinchilla (160 steps, eval loss) lr 0.016
# gave 1.98, 0.032 1.78, 0.064 1.82 (AdamW's tiny baseline: 2.47).
TINY_SPACE = SearchSpace(
    grid={**PAPER_SPACE.grid, "batch_size": (16, 32, 64, 128)},
    baseline={**PAPER_SPACE.baseline, "lr": 3.2e-2, "batch_size": 32},
    fixed={"warmup": 0, "min_lr_ratio": 0.0},
)

SPEC = OptimizerSpec(
    name="muon",
    build=build,
    # The paper's tuned 130m 1x values (OPTIMIZERS.md section 1); warmup 0 overrides the trainer's default.
    defaults={
        "wd": 0.1,
        "momentum": 0.95,
        "beta1": 0.8,
        "beta2": 0.98,
        "eps": 1e-15,
        "muon_eps": 1e-5,
        "muon_to_adam_lr": 0.2,
        "decay": 0.8,
        "warmup": 0,
        "backend_steps": 10,  # WhenWen/levanter 1aae79ea MuonConfig.backend_steps (module docstring)
    },
    spaces={"paper": PAPER_SPACE, "tiny": TINY_SPACE},
    routing=(
        "hidden matrices: Muon (Nesterov, NS x backend_steps (10), scale sqrt(max(1, out/in))), decayed, "
        "not clipped; "
        "embedding, lm_head, norms: AdamW at lr*muon_to_adam_lr, clipped by their own global norm; "
        "decayed: lm_head; not decayed: embedding, norms"
    ),
    schedule="wsd",
    clips_itself=True,
    reference="Levanter MuonConfig (stanford-crfm/levanter optim/muon.py); parity oracle torch.optim.Muon",
)
