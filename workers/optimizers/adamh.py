"""AdamH: Adam on the Hyperball (PAPER.md section 7, OPTIMIZERS.md section 4; Marin Levanter `adamh.py`).

Every Linear weight (the hidden matrices and lm_head) keeps its initial Frobenius norm R = ||W_0||_F:
    u = m_hat / (sqrt(v_hat) + eps)                     (Adam's direction)
    W <- R normalize(W - lr R normalize(u)),  normalize(x) = x / ||x||_F
so lr is the size of each step relative to the weight (an angle of about arctan(lr) when u is orthogonal to W).
Embedding and norms use plain Adam at `adam_lr`. No weight decay anywhere: the sphere replaces it.
Clipping follows Marin's code: one global-norm clip per sub-chain (one over the AdamH weights, one over the
Adam part), each over its own subset.

R is stored in the optimizer state at the first step (HeavyBall's `init_norm`, OPTIMIZERS.md section 4), so
it is saved in the state dict and rounding (bf16 params) cannot make the radius drift; Marin re-reads ||W||,
which equals R up to rounding. ||u|| is floored at 1e-10 as in Marin's `scale_invariant_update`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from workers.optimizers import _cpu_kernels as cpu_kernels
from workers.optimizers.base import HParams, OptimizerSpec, SearchSpace, named_params_by_role
from workers.optimizers.functional import (
    adam_directions_into_,
    advance_steps,
    bias_corrections,
    scratch_buffers,
    state_buffers,
)
from workers.optimizers.muon import RuleOptimizer, adam_rule

# Marin's scale_invariant_update floors ||u|| and ||W'|| at 1e-10 (lib/levanter/.../adamh.py).
NORM_FLOOR = 1e-10


@torch.no_grad()
def hyperball_radii(state: Mapping[torch.Tensor, dict[str, Any]], params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """R = ||W_0||_F per param, stored as state[p]["radius"] (a 0-d float32/float64 tensor) on first use."""
    radii = []
    for p in params:
        s = state[p]
        if "radius" not in s:
            dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
            s["radius"] = torch.linalg.vector_norm(p.to(dtype))
        radii.append(s["radius"])
    return radii


@torch.no_grad()
def hyperball_step_(
    params: Sequence[torch.Tensor], directions: Sequence[torch.Tensor], radii: Sequence[torch.Tensor], lr: float
) -> None:
    """W <- R normalize(W - lr R normalize(u)) for every param, vectorised with _foreach ops (no host sync).

    Computed in the directions' dtype (float32, float64 for float64 params). In place: when the dtypes match the
    params move without a temporary (a fresh model-sized tensor costs more than a pass on CPU); otherwise the
    step is taken on a copy and written back. `directions` are read, never modified.
    """
    params, directions, radii = list(params), list(directions), list(radii)
    u_norms = torch._foreach_norm(directions)
    torch._foreach_clamp_min_(u_norms, NORM_FLOOR)
    coefs = torch._foreach_div(radii, u_norms)  # R / ||u||, 0-d each
    torch._foreach_mul_(coefs, -lr)
    same = all(p.dtype == d.dtype for p, d in zip(params, directions, strict=True))
    weights = params if same else [p.to(d.dtype) for p, d in zip(params, directions, strict=True)]
    # W' = W - lr R u / ||u|| in one pass (addcmul with the 0-d coefficient broadcast).
    torch._foreach_addcmul_(weights, directions, coefs)
    new_norms = torch._foreach_norm(weights)
    torch._foreach_clamp_min_(new_norms, NORM_FLOOR)
    torch._foreach_mul_(weights, torch._foreach_div(radii, new_norms))  # back onto the sphere of radius R
    if not same:
        for p, w in zip(params, weights, strict=True):
            p.copy_(w)


class AdamH(RuleOptimizer):
    """Rule "adamh" (Adam direction on the hyperball) on every Linear weight; rule "adam" on the rest.

    Group keys: "adamh": lr, betas, eps; "adam": lr, betas, eps, weight_decay (0).
    """

    # The AdamH part's clip is a factor folded into the moments pass (adamh_rule), not a copy of its gradients.
    scaled_clip_rules = ("adamh",)

    def __init__(self, param_groups: Sequence[dict[str, Any]], *, max_grad_norm: float = 0.0) -> None:
        super().__init__(param_groups, max_grad_norm=max_grad_norm, clip_sets=[("adamh",), ("adam",)])

    def rule_adamh(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        adamh_rule(self, group, params, grads)

    def rule_adam(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        adam_rule(self, group, params, grads)


def adamh_rule(optimizer: torch.optim.Optimizer, group: dict[str, Any], params: list, grads: list) -> None:
    """Adam's bias-corrected direction (optax scale_by_adam), then the hyperball step at group["lr"].

    u comes from torch's fused Adam kernel into a reused buffer (functional.adam_directions_into_), the hyperball
    step from _foreach ops in place (hyperball_step_).
    """
    scale = getattr(optimizer, "clip_scales", {}).get("adamh")  # the clip factor (scaled_clip_rules)
    if _kernel_rule(optimizer, group, params, grads, scale):
        return
    if scale is not None:  # the clip as RuleOptimizer would have made it: g x factor into reused buffers
        clipped = scratch_buffers(optimizer, params, "clipped_grad")
        for g, c in zip(grads, clipped, strict=True):
            torch.mul(g, scale, out=c)
        grads = clipped
    beta1, beta2 = group["betas"]
    out = scratch_buffers(optimizer, params, "direction")
    directions = adam_directions_into_(optimizer.state, params, grads, out, beta1, beta2, group["eps"])
    hyperball_step_(params, directions, hyperball_radii(optimizer.state, params), group["lr"])


def _kernel_rule(
    optimizer: torch.optim.Optimizer,
    group: dict[str, Any],
    params: list,
    grads: list,
    grad_scale: float | torch.Tensor | None,
) -> bool:
    """adamh_rule with cpu_kernels (float32 CPU tensors), two passes per weight: the clip factor `grad_scale`, the
    moments, ||u||^2, W.u and ||W||^2 in one; W <- R (W - c u) / ||W - c u|| in the other (u again from m and v),
    with c = lr R / ||u|| and ||W - c u||^2 = ||W||^2 - 2 c W.u + c^2 ||u||^2: Marin's norm of W' up to rounding,
    without a pass over W' (||W'||^2 = R^2 (1 - 2 lr cos + lr^2) cancels only when lr and the cosine both near 1).
    False when not taken (torch ops instead)."""
    ms, vs = state_buffers(optimizer.state, params, "exp_avg"), state_buffers(optimizer.state, params, "exp_avg_sq")
    kernels = cpu_kernels.kernels_for(params, grads, ms, vs)
    if kernels is None:
        return False
    # The clip factor as a host float only here, where every tensor is on the CPU: on CUDA it stays a device
    # tensor (float() would wait for the GPU every step).
    grad_scale = 1.0 if grad_scale is None else float(grad_scale)
    beta1, beta2 = group["betas"]
    eps, lr = group["eps"], group["lr"]
    steps = advance_steps(optimizer.state, params)
    bc1s, bc2ss = bias_corrections(steps, beta1, beta2)
    sums = kernels.adamh_moments(grads, ms, vs, params, grad_scale, beta1, beta2, bc1s, bc2ss, eps)
    coefs, rescales = [], []
    radii = torch.stack(hyperball_radii(optimizer.state, params)).tolist()  # one host read, not one per weight
    for (uu, wu, ww), r in zip(sums, radii, strict=True):
        coef = lr * r / max(math.sqrt(uu), NORM_FLOOR)
        new_norm = math.sqrt(max(ww - 2 * coef * wu + coef * coef * uu, 0.0))
        coefs.append(coef)
        rescales.append(r / max(new_norm, NORM_FLOOR))
    kernels.adamh_apply(params, ms, vs, bc1s, bc2ss, eps, coefs, rescales)
    return True


def adam_part(roles: Mapping[str, list[tuple[str, nn.Parameter]]], hp: HParams) -> dict[str, Any]:
    """Embedding and norms: plain Adam at adam_lr, no weight decay (Marin adamh.py / muonh.py `adam_transform`)."""
    return {
        "rule": "adam",
        "params": [p for role in ("embedding", "norm") for _, p in roles[role]],
        "lr": float(hp["adam_lr"]),
        "betas": (float(hp["beta1"]), float(hp["beta2"])),
        "eps": float(hp["eps"]),
        "weight_decay": 0.0,
    }


def build(model: nn.Module, hp: HParams) -> torch.optim.Optimizer:
    roles = named_params_by_role(model)
    adamh = {
        "rule": "adamh",
        "params": [p for role in ("matrix", "head") for _, p in roles[role]],
        "lr": float(hp["lr"]),
        "betas": (float(hp["beta1"]), float(hp["beta2"])),
        "eps": float(hp["eps"]),
    }
    return AdamH([adamh, adam_part(roles, hp)], max_grad_norm=float(hp["max_grad_norm"]))


# No paper grid exists for AdamH. Derived from AdamW's Phase I grid (PAPER.md section 3): the authors' docstring
# says the AdamH lr "should be sqrt(learning_rate * weight_decay)" of the weight-decay config, so AdamW's lr grid
# {4e-3 .. 3.2e-2} at wd 0.1 maps to {0.02, 0.028, 0.04, 0.057}; the grid is shifted one sqrt(2) step down to
# hold 0.02, the lr of Marin's AdamH 130m speedrun (experiments/speedrun/adamh_llama_scaling: lr 0.02,
# adam_lr 0.008, warmup 1000, beta1 0.9, beta2 0.98, eps 1e-20, clip 1), which is the baseline. The Adam part's
# adam_lr takes AdamW's lr grid. No wd: the hyperball has no weight decay (PAPER.md section 7).
PAPER_SPACE = SearchSpace(
    grid={
        "lr": (1.4e-2, 2e-2, 2.8e-2, 4e-2),
        "adam_lr": (4e-3, 8e-3, 1.6e-2, 3.2e-2),
        "warmup": (500, 1000, 2000, 4000),
        "beta1": (0.9, 0.95, 0.98),
        "beta2": (0.9, 0.95, 0.98),
        "eps": (1e-25, 1e-20, 1e-15, 1e-10),
        "max_grad_norm": (0.0, 1.0, 2.0),
        "batch_size": (128, 256, 512, 1024),
    },
    baseline={
        "lr": 2e-2,
        "adam_lr": 8e-3,
        "warmup": 1000,
        "beta1": 0.9,
        "beta2": 0.98,
        "eps": 1e-20,
        "max_grad_norm": 1.0,
        "batch_size": 128,
    },
    fixed={"min_lr_ratio": 0.0},
)

# Tiny CPU scales (~640 steps of 32 x 128 tokens on tiny-130k): AdamW's tiny warmup and batch grids. Measured
# there at 0.25x Chinchilla (160 steps, eval loss; AdamW's tiny baseline 2.47): the Adam part's lr matters most,
# because with the matrices' norms frozen at their small init (std 0.02) the norm gains and the embedding must
# set the scale: (lr, adam_lr) = (0.028, 0.012) 3.00, (0.08, 0.024) 2.63, (0.08, 0.06) 2.36, (0.08, 0.15) 2.21,
# (0.08, 0.3) 2.17, (0.08, 0.64) 2.19, (0.04, 0.15) 2.27, (0.16, 0.32) 2.16. So both grids sit above the
# sqrt(lr x wd) ~ 0.035 rule, one factor-2 step apart as AdamW's lr grid.
TINY_SPACE = SearchSpace(
    grid={
        "lr": (4e-2, 8e-2, 0.16, 0.32),
        "adam_lr": (8e-2, 0.16, 0.32, 0.64),
        "warmup": (16, 32, 64, 128),
        "beta1": (0.9, 0.95, 0.98),
        "beta2": (0.9, 0.95, 0.98),
        "eps": (1e-25, 1e-20, 1e-15, 1e-10),
        "max_grad_norm": (0.0, 1.0, 2.0),
        "batch_size": (16, 32, 64, 128),
    },
    baseline={
        "lr": 8e-2,
        "adam_lr": 0.32,
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
    name="adamh",
    build=build,
    # Marin's AdamH 130m speedrun values (see PAPER_SPACE); Levanter's AdamHConfig defaults are beta2 0.95, eps 1e-8.
    defaults={"adam_lr": 8e-3, "beta1": 0.9, "beta2": 0.98, "eps": 1e-20},
    spaces={"paper": PAPER_SPACE, "tiny": TINY_SPACE},
    routing=(
        "hidden matrices and lm_head: AdamH (Adam direction, hyperball step keeping ||W||_F = ||W_0||_F); "
        "embedding, norms: Adam at adam_lr; no weight decay; clipped per sub-chain (AdamH part, Adam part)"
    ),
    schedule="cosine",  # Levanter's default schedule, as in Marin's AdamH speedrun
    clips_itself=True,
    reference="Marin Levanter AdamHConfig (marin-community/marin lib/levanter/src/levanter/optim/adamh.py)",
    cpu_kernels=True,
)
