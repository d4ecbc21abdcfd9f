"""Update-rule pieces shared by several optimizers (the Adam part of Muon/Scion/Adam-mini, NAdamW, ...).

Functions act on one parameter and its state dict so that a composite optimizer can mix rules per param
group. State is kept in float32 whatever the parameter dtype (bf16 params with fp32 state, issue 3 point 4);
the update is applied in the parameter's dtype at the end.
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


@torch.no_grad()
def adam_moments_(
    state: dict[str, torch.Tensor], grad: torch.Tensor, beta1: float, beta2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advance Adam's moments in `state` ("exp_avg", "exp_avg_sq", created on first use); returns them."""
    if "exp_avg" not in state:
        state["exp_avg"] = state_zeros(grad)
        state["exp_avg_sq"] = state_zeros(grad)
    m, v = state["exp_avg"], state["exp_avg_sq"]
    m.lerp_(grad, 1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    return m, v


@torch.no_grad()
def adam_direction(m: torch.Tensor, v: torch.Tensor, step: int, beta1: float, beta2: float, eps: float) -> torch.Tensor:
    """m_hat / (sqrt(v_hat) + eps) with bias corrections for 1-based `step` (optax scale_by_adam)."""
    m_hat = m / (1 - beta1**step)
    v_hat = v / (1 - beta2**step)
    return m_hat / (v_hat.sqrt() + eps)


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
