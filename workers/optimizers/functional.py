"""Update-rule pieces shared by several optimizers (the Adam part of Muon/Scion/Adam-mini, NAdamW, ...).

Functions act on the parameters of one param group (and their state dicts), vectorised with torch's _foreach ops,
so that a composite optimizer can mix rules per group. State is kept in float32 whatever the parameter dtype
(bf16 params with fp32 state, issue 3 point 4); the update is applied in the parameter's dtype at the end.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from workers.optimizers import _cpu_kernels as cpu_kernels


def state_zeros(p: torch.Tensor) -> torch.Tensor:
    """A zero state tensor like `p`, in float32 unless `p` is float64 (reference tests run in float64)."""
    dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
    return torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)


def state_dtype_grad(p: torch.Tensor, copy: bool = False) -> torch.Tensor:
    """p.grad in the state dtype (float32, or float64 for float64 params); a fresh tensor when `copy`."""
    g = p.grad
    assert g is not None
    dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
    if g.dtype is dtype and not copy:  # the common case, without a dispatcher call (every param, every step)
        return g
    return g.to(dtype, copy=copy)


def _global_norm_and_scale(grads: list[torch.Tensor], max_norm: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The joint L2 norm of `grads` and optax.clip_by_global_norm's factor (None when off: max_norm <= 0).

    Norms in the gradients' own dtype: float64 reference tests need full precision, bf16 is upcast. The factor
    is optax.clip_by_global_norm exactly (what Levanter calls): max_norm / norm when norm >= max_norm, else 1, no
    epsilon (torch.nn.utils.clip_grad_norm_ divides by norm + 1e-6; tests/oracles compare against optax). It stays
    a tensor: no host sync.
    """
    norms = [n.float() if n.dtype in (torch.bfloat16, torch.float16) else n for n in torch._foreach_norm(grads)]
    norm = torch.linalg.vector_norm(torch.stack(norms))
    scale = torch.where(norm < max_norm, torch.ones_like(norm), max_norm / norm) if max_norm > 0 else None
    return norm, scale


@torch.no_grad()
def clip_factor(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """optax.clip_by_global_norm's factor for `grads` as a 0-d tensor: max_norm / norm when norm >= max_norm, else
    1 (also when clipping is off, max_norm <= 0, or there are no gradients)."""
    if not grads:
        return torch.ones(())
    kernels = cpu_kernels.kernels_for(grads) if max_norm > 0 else None
    if kernels is not None:  # one vectorised read of the gradients (torch's per-tensor norms cost 4x as much)
        norm = math.sqrt(kernels.sumsq(grads))
        return torch.tensor(1.0 if norm < max_norm else max_norm / norm)
    norm_t, scale = _global_norm_and_scale(grads, max_norm)
    return torch.ones_like(norm_t) if scale is None else scale


@torch.no_grad()
def clip_by_global_norm_(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale `grads` in place so their joint L2 norm is at most `max_norm` (0 or less = off); returns the norm.

    optax.clip_by_global_norm semantics: g <- g * max_norm / norm when norm > max_norm. Used by optimizers
    that clip only a subset of their parameters (Levanter's Muon, Scion, Adam-mini: OPTIMIZERS.md section 1).
    """
    if not grads:
        return torch.zeros(())
    norm, scale = _global_norm_and_scale(grads, max_norm)
    if scale is not None:
        torch._foreach_mul_(grads, scale)
    return norm


@torch.no_grad()
def clip_by_global_norm_into_(grads: list[torch.Tensor], max_norm: float, out: list[torch.Tensor]) -> torch.Tensor:
    """clip_by_global_norm_ with the clipped gradients written into `out` (same shapes and dtypes); `grads` stay.

    One pass per tensor (g * scale into a reused buffer) instead of a fresh copy and an in-place scale.
    """
    if not grads:
        return torch.zeros(())
    norm, scale = _global_norm_and_scale(grads, max_norm)  # max_norm <= 0 (off): a plain copy
    for g, o in zip(grads, out, strict=True):
        if scale is None:
            o.copy_(g)
        else:
            torch.mul(g, scale, out=o)
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


def adam_state(
    state: Mapping[torch.Tensor, dict[str, Any]], params: Sequence[torch.Tensor]
) -> tuple[list[int], list[torch.Tensor], list[torch.Tensor]]:
    """Advance the step counters of `params` and return (steps, exp_avg buffers, exp_avg_sq buffers)."""
    return (
        advance_steps(state, params),
        state_buffers(state, params, "exp_avg"),
        state_buffers(state, params, "exp_avg_sq"),
    )


def bias_corrections(steps: Sequence[int], beta1: float, beta2: float) -> tuple[list[float], list[float]]:
    """Adam's bias corrections per param as host floats: (1 - b1^t, sqrt(1 - b2^t)) for each step count t.

    What the CPU kernels take (Cautious, MARS, AdamH): m_hat = m / (1 - b1^t), sqrt(v_hat) = sqrt(v) / sqrt(1 - b2^t),
    the form torch.optim.AdamW uses (optax scale_by_adam up to rounding).
    """
    return [1 - beta1**t for t in steps], [math.sqrt(1 - beta2**t) for t in steps]


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
    steps, ms, vs = adam_state(state, params)
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
    if fused_ok(params, updates):
        # torch's fused SGD kernel without momentum: p - lr (u + wd p) in one pass per tensor (torch.optim.SGD).
        torch._fused_sgd_(
            params, updates, [], weight_decay=wd, momentum=0.0, lr=lr, dampening=0.0, nesterov=False,
            maximize=False, is_first_step=False,
        )  # fmt: skip
        return
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


# ---- fused single-pass Adam (torch's own kernel) ---------------------------------------------------------------
#
# On CPU a step of _foreach ops costs one memory pass per operation, and an op that returns new tensors also pays
# for fresh pages (measured on the 4.3M-parameter bench model, one thread: fused AdamW 4.8 ms, one in-place
# _foreach_mul_ 1.0 ms, one allocating _foreach_sqrt 18.7 ms). torch._fused_adamw_ (the kernel behind
# torch.optim.AdamW(fused=True), CPU and CUDA) advances m and v and moves the parameter in one pass, so the
# elementwise optimizers build on it where their tensors allow it and keep every other pass in place.


def fused_ok(*tensor_lists: Sequence[torch.Tensor]) -> bool:
    """True when torch's fused kernels can take these lists: one float dtype, one CPU or CUDA device, contiguous.

    The kernels want params, grads and moments in the same dtype (bf16 params with float32 state take the
    _foreach path instead), and walk each tensor's memory in order, so a transposed view (Newton-Schulz's
    output for tall matrices) would pair the wrong elements: every tensor must be contiguous.
    """
    first = tensor_lists[0][0]
    if first.device.type not in ("cpu", "cuda") or first.dtype not in (torch.float32, torch.float64):
        return False
    return all(
        t.dtype == first.dtype and t.device == first.device and t.is_contiguous() for ts in tensor_lists for t in ts
    )


def _step_tensors(params: Sequence[torch.Tensor], steps: Sequence[int]) -> list[torch.Tensor]:
    """The fused kernel reads each param's step from a tensor; one 0-d float32 tensor per distinct step (no copy
    from the host: torch.full fills it on the device)."""
    made: dict[int, torch.Tensor] = {}
    out = []
    for p, t in zip(params, steps, strict=True):
        if t not in made:
            made[t] = torch.full((), float(t), dtype=torch.float32, device=p.device)
        out.append(made[t])
    return out


@torch.no_grad()
def fused_adam_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    ms: Sequence[torch.Tensor],
    vs: Sequence[torch.Tensor],
    steps: Sequence[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    nesterov: bool = False,
    grad_divisor: torch.Tensor | None = None,
) -> None:
    """theta <- theta (1 - lr wd) - lr u in one pass per tensor, u = adam_directions' update (moments advanced).

    `grad_divisor` (a 0-d float32 tensor; float32 tensors only, not with `nesterov`): the kernel first divides
    each gradient by it in place (its grad_scale, meant for AMP), so a clip costs no pass of its own.

    torch._fused_adamw_ computes m = lerp(m, g, 1-b1), v = b2 v + (1-b2) g^2 and
    theta <- theta (1 - lr wd) - lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps): optax scale_by_adam with
    add_decayed_weights and scale(-lr), as apply_updates_(adam_directions(...)) computes it in several passes.

    `nesterov` (optax scale_by_adam(nesterov=True)): u's numerator c1 m_t + c2 g, with m_t = b1 m + (1-b1) g,
    c1 = b1 / (1 - b1^(t+1)), c2 = (1-b1) / (1 - b1^t), equals (A + B) lerp(m, g, B / (A + B)) with A = c1 b1 and
    B = c1 (1-b1) + c2. So the kernel runs with beta1' = A / (A + B) (its m becomes that lerp) and a step size of
    lr (A + B); one lerp then turns its m back into m_t: m_t = lerp(q, g, 1 - b1 / beta1'), since
    m = (q - (1 - beta1') g) / beta1'. The same update, in two passes instead of one per operation.
    """
    params, grads, ms, vs = list(params), list(grads), list(ms), list(vs)
    if not params:
        return
    if not nesterov or beta1 == 0.0:  # with b1 = 0 the Nesterov numerator is g: plain Adam
        torch._fused_adamw_(
            params, grads, ms, vs, [], _step_tensors(params, steps),
            lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay, eps=eps, amsgrad=False, maximize=False,
            grad_scale=grad_divisor,
        )  # fmt: skip
        return
    assert grad_divisor is None, "grad_divisor is not supported with nesterov"

    # beta1' depends on t: one kernel call per distinct step (all params of a group share it in practice).
    for t in sorted(set(steps)):
        idx = [i for i, s in enumerate(steps) if s == t]
        a = beta1 * beta1 / (1 - beta1 ** (t + 1))
        b = beta1 * (1 - beta1) / (1 - beta1 ** (t + 1)) + (1 - beta1) / (1 - beta1**t)
        beta1_k = a / (a + b)
        lr_k = lr * (a + b) * (1 - beta1_k**t)  # the kernel divides by its own 1 - beta1'^t
        wd_k = lr * weight_decay / lr_k if lr_k != 0 else 0.0  # the kernel decays by lr_k wd_k = lr wd
        sub_m = [ms[i] for i in idx]
        sub_g = [grads[i] for i in idx]
        sub_p = [params[i] for i in idx]
        torch._fused_adamw_(
            sub_p, sub_g, sub_m, [vs[i] for i in idx], [], _step_tensors(sub_p, [t] * len(idx)),
            lr=lr_k, beta1=beta1_k, beta2=beta2, weight_decay=wd_k, eps=eps, amsgrad=False, maximize=False,
        )  # fmt: skip
        torch._foreach_lerp_(sub_m, sub_g, 1 - beta1 / beta1_k)


@torch.no_grad()
def adam_step_(
    state: Mapping[torch.Tensor, dict[str, Any]],
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    nesterov: bool = False,
    grad_divisor: torch.Tensor | None = None,
) -> None:
    """Advance the step counters and moments of `params` and apply optax's AdamW update (theta - lr (u + wd theta)).

    One fused pass where the dtypes allow it (fused_adam_), else adam_directions and apply_updates_ (_foreach).
    `grad_divisor` (0-d): the gradients are divided by it first, IN PLACE (the caller must own them).
    """
    params, grads = list(params), list(grads)
    if not params:
        return
    steps, ms, vs = adam_state(state, params)
    fused = fused_ok(params, grads, ms, vs)
    # The kernel takes its divisor in float32 only: float64 (reference tests) divides in its own pass, exactly.
    if grad_divisor is not None and not (fused and grads[0].dtype == torch.float32 and not nesterov):
        torch._foreach_div_(grads, grad_divisor.to(grads[0].dtype))
        grad_divisor = None
    if fused:
        fused_adam_(
            params, grads, ms, vs, steps, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
            nesterov=nesterov, grad_divisor=grad_divisor,
        )  # fmt: skip
    else:
        updates = adam_directions(ms, vs, grads, steps, beta1, beta2, eps, nesterov=nesterov)
        apply_updates_(params, updates, lr, weight_decay)


def scratch_buffers(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor], key: str) -> list[torch.Tensor]:
    """Per-param work buffers kept on the optimizer between steps (not state: never saved, not restored).

    Reused every step because on CPU a fresh tensor the size of the model costs more than a pass over it (the
    allocator hands back new pages). Float32 zeros (float64 for float64 params), created on first use.
    """
    store: defaultdict[torch.Tensor, dict[str, Any]] = optimizer.__dict__.setdefault("_scratch", defaultdict(dict))
    return state_buffers(store, params, key)


@torch.no_grad()
def adam_directions_into_(
    state: Mapping[torch.Tensor, dict[str, Any]],
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    out: Sequence[torch.Tensor],
    beta1: float,
    beta2: float,
    eps: float,
) -> list[torch.Tensor]:
    """advance_adam, with u written into the buffers `out` (same shapes, state dtype); returns the u tensors.

    Fused where possible: the kernel with lr = -1 and weight decay -1 first multiplies the buffer by
    1 - lr wd = 0, then adds u; so the buffer needs no zeroing pass, only finite contents (it starts at zero and
    holds a finite u after each step; a non-finite u means the moments are already non-finite for good).
    """
    params, grads, out = list(params), list(grads), list(out)
    if not params:
        return []
    if not fused_ok(out, grads):
        return advance_adam(state, params, grads, beta1, beta2, eps)
    steps, ms, vs = adam_state(state, params)
    fused_adam_(out, grads, ms, vs, steps, lr=-1.0, beta1=beta1, beta2=beta2, eps=eps, weight_decay=-1.0)
    return out
