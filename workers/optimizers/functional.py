"""Update-rule pieces shared by several optimizers (the Adam part of Muon/Scion/Adam-mini, NAdamW, ...).

Functions act on the parameters of one param group (and their state dicts), vectorised with torch's _foreach ops,
so that a composite optimizer can mix rules per group. State is kept in float32 whatever the parameter dtype
(bf16 params with fp32 state, issue 3 point 4); the update is applied in the parameter's dtype at the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def state_zeros(p: torch.Tensor) -> torch.Tensor:
    """A zero state tensor like `p`, in float32 unless `p` is float64 (reference tests run in float64)."""
    dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
    return torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)


def state_dtype_grad(p: torch.Tensor, copy: bool = False) -> torch.Tensor:
    """p.grad in the state dtype (float32, or float64 for float64 params); a fresh tensor when `copy`."""
    assert p.grad is not None
    dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
    return p.grad.to(dtype, copy=copy)


@torch.no_grad()
def clip_by_global_norm_(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale `grads` in place so their joint L2 norm is at most `max_norm` (0 or less = off); returns the norm.

    optax.clip_by_global_norm semantics: g <- g * max_norm / norm when norm > max_norm. Used by optimizers
    that clip only a subset of their parameters (Levanter's Muon, Scion, Adam-mini: OPTIMIZERS.md section 1).
    """
    if not grads:
        return torch.zeros(())
    # Norms in the gradients' own dtype: float64 reference tests need full precision, bf16 is upcast.
    norms = [n.float() if n.dtype in (torch.bfloat16, torch.float16) else n for n in torch._foreach_norm(grads)]
    norm = torch.linalg.vector_norm(torch.stack(norms))
    if max_norm > 0:
        # optax.clip_by_global_norm exactly (what Levanter calls): g * max_norm / norm when norm >= max_norm, no
        # epsilon (torch.nn.utils.clip_grad_norm_ divides by norm + 1e-6; tests/oracles compare against optax).
        scale = torch.where(norm < max_norm, torch.ones_like(norm), max_norm / norm)
        torch._foreach_mul_(grads, scale)
    return norm


def advance_steps(state: Mapping[torch.Tensor, dict[str, Any]], params: Sequence[torch.Tensor]) -> list[int]:
    """Increment each param's 1-based step counter (optax's `count`) and return the new values.

    A Python int per param: the bias corrections are host scalars, so step() never syncs with the device.
    """
    steps = []
    for p in params:
        s = state[p]
        s["step"] = int(s.get("step", 0)) + 1
        steps.append(s["step"])
    return steps


@torch.no_grad()
def adam_directions(
    ms: list[torch.Tensor],
    vs: list[torch.Tensor],
    grads: list[torch.Tensor],
    steps: Sequence[int],
    beta1: float,
    beta2: float,
    eps: float,
    nesterov: bool = False,
) -> list[torch.Tensor]:
    """Advance Adam's moments in place and return optax scale_by_adam's update, one new tensor per param.

    m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; u = m_hat / (sqrt(v_hat) + eps) with eps outside the sqrt and
    m_hat = m / (1 - b1^t), or with `nesterov` b1 m / (1 - b1^(t+1)) + (1-b1) g / (1 - b1^t) (optax
    scale_by_adam(nesterov=True), OPTIMIZERS.md 3.2). Vectorised with _foreach ops over the params of a group, as
    torch.optim.AdamW's `_multi_tensor_adamw` does: one kernel per operation over the whole list, not one per
    parameter (on CPU the per-tensor dispatch and temporaries, not the arithmetic, dominate small tensors).
    """
    torch._foreach_lerp_(ms, grads, 1 - beta1)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)
    # m_hat = scale * base with base a tensor and scale a host scalar per param; the scale is folded into the
    # denominator so that each step allocates as few temporaries as possible (allocation dominates on CPU).
    if nesterov:
        # c1 m + c2 g = (c1 + c2) lerp(m, g, c2 / (c1 + c2)), c1 = b1 / (1 - b1^(t+1)), c2 = (1-b1) / (1 - b1^t).
        c1 = [beta1 / (1 - beta1 ** (t + 1)) for t in steps]
        c2 = [(1 - beta1) / (1 - beta1**t) for t in steps]
        scales = [a + b for a, b in zip(c1, c2, strict=True)]
        numer = torch._foreach_lerp(ms, grads, [b / s for b, s in zip(c2, scales, strict=True)])
    else:
        scales = [1 / (1 - beta1**t) for t in steps]
    # (sqrt(v_hat) + eps) / scale, with sqrt(v_hat) = sqrt(v) / sqrt(1 - b2^t) as torch.optim.AdamW computes it.
    denom = torch._foreach_sqrt(vs)
    torch._foreach_mul_(denom, [1 / ((1 - beta2**t) ** 0.5 * s) for t, s in zip(steps, scales, strict=True)])
    torch._foreach_add_(denom, [eps / s for s in scales])
    if nesterov:
        torch._foreach_div_(numer, denom)
        return list(numer)
    # u = m / denom, written into denom (no second temporary; m is state and must not change).
    torch._foreach_reciprocal_(denom)
    torch._foreach_mul_(denom, ms)
    return list(denom)


@torch.no_grad()
def advance_adam(
    state: Mapping[torch.Tensor, dict[str, Any]],
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    beta1: float,
    beta2: float,
    eps: float,
) -> list[torch.Tensor]:
    """Advance the step counters and Adam moments ("step", "exp_avg", "exp_avg_sq") of `params`; return u per param.

    u is optax scale_by_adam's bias-corrected direction (adam_directions), computed over the whole list with
    _foreach ops. `grads` are read, never modified (they may be the parameters' own .grad tensors).
    """
    params = list(params)
    if not params:  # _foreach ops reject empty lists (a group whose params all lack a gradient)
        return []
    steps = advance_steps(state, params)
    ms = state_buffers(state, params, "exp_avg")
    vs = state_buffers(state, params, "exp_avg_sq")
    return adam_directions(ms, vs, list(grads), steps, beta1, beta2, eps)


@torch.no_grad()
def apply_update_(p: torch.Tensor, update: torch.Tensor, lr: float, wd: float) -> None:
    """theta <- theta - lr (update + wd theta): optax add_decayed_weights(wd) then scale(-lr) (Levanter)."""
    if wd != 0:
        p.mul_(1 - lr * wd)
    p.add_(update.to(p.dtype), alpha=-lr)


def state_buffers(
    state: Mapping[torch.Tensor, dict[str, Any]], params: Sequence[torch.Tensor], key: str
) -> list[torch.Tensor]:
    """state[p][key] for each param, created as zeros (float32, float64 for float64 params) on first use."""
    out = []
    for p in params:
        s = state[p]
        if key not in s:
            s[key] = state_zeros(p)
        out.append(s[key])
    return out


@torch.no_grad()
def apply_updates_(params: Sequence[torch.Tensor], updates: Sequence[torch.Tensor], lr: float, wd: float) -> None:
    """theta <- theta - lr (u + wd theta) for every param: apply_update_'s arithmetic, vectorised with _foreach ops.

    Decay first, then the step in the parameter's dtype (optax add_decayed_weights(wd), scale(-lr); Levanter).
    """
    params = list(params)
    if not params:  # _foreach ops reject empty lists
        return
    updates = [u if u.dtype == p.dtype else u.to(p.dtype) for p, u in zip(params, updates, strict=True)]
    if wd != 0:
        torch._foreach_mul_(params, 1 - lr * wd)
    torch._foreach_add_(params, updates, alpha=-lr)


def restore_state_dtypes(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> None:
    """Undo torch's cast of floating-point state to the parameter dtype; call it after `load_state_dict`.

    torch.optim.Optimizer.load_state_dict casts every floating-point state tensor to its parameter's dtype, which
    would round the float32 state of bf16 parameters (state_zeros) to bf16 and break a bitwise resume: put back
    each saved tensor whose dtype differs, with its own dtype, on the parameter's device.
    """
    saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for saved_id, p in zip(saved_ids, params, strict=True):
        for key, value in state_dict["state"].get(saved_id, {}).items():
            if isinstance(value, torch.Tensor) and value.dtype != optimizer.state[p][key].dtype:
                optimizer.state[p][key] = value.to(device=p.device, copy=True)
