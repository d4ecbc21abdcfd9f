"""Parity harness: our torch optimizers against optax (JAX, float64 on CPU) on the same parameters and gradients.

Every oracle in tests/oracles/ is an optax `GradientTransformation` built from optax primitives (scale_by_adam,
scale_by_lion, trace, ema, clip_by_global_norm, add_decayed_weights, scale, contrib.scale_by_muon's Newton-Schulz,
...) following Levanter's source (stanford-crfm/levanter src/levanter/optim/*.py) or Marin's (AdamH/MuonH,
marin-community/marin lib/levanter/src/levanter/optim/*.py). The oracles were written from those sources, not
from ../shared/OPTIMIZERS.md, so a misreading of the notes that the code and its own tests share shows up here.

Both sides start from the same float64 parameters of a small Llama (workers.model, real parameter names, so
the optimizers' routing by role is exercised) and see the same float64 gradient sequence. `compare` checks
every parameter after every run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

# XLA on one thread, as torch in conftest.py: tiny arrays, a loaded 2-core machine. Read when the backend starts.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"]
).strip()

import jax
import numpy as np
import torch

jax.config.update("jax_enable_x64", True)  # float64 on both sides

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from workers.model import ModelConfig, Transformer, build_model  # noqa: E402

Params = dict[str, np.ndarray]

# A small Llama (one layer: oracle compile and run time). Every 2-D shape has more entries than the target of
# Levanter's merge_small_dims for SOAP (2048), so that merge is a no-op on them; 2 heads of 24 for Adam-mini.
CONFIG = ModelConfig(d_model=48, n_layers=1, n_heads=2, d_ff=128, seq_len=16, vocab_size=64, family="tiny")
STEPS = 20  # steps per parity run (issue 14: 20+)


def small_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return build_model(CONFIG).double()


def initial_params(model: torch.nn.Module) -> Params:
    return {name: p.detach().numpy().copy() for name, p in model.named_parameters()}


def gradient_sequence(params: Mapping[str, np.ndarray], steps: int = STEPS, seed: int = 1, scale: float = 0.1):
    """`steps` dicts of float64 Gaussian gradients (each parameter's own scale varies per step)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        out.append({n: scale * rng.uniform(0.5, 2.0) * rng.standard_normal(p.shape) for n, p in params.items()})
    return out


# ---- Levanter's routing, read from its source (not from workers.model.param_role) ---------------------------


def levanter_kind(name: str) -> str:
    """What Levanter's Llama calls the tensor: "embedding", "lm_head", "linear" (a Linear weight) or "norm"."""
    if name.startswith("tok_emb."):
        return "embedding"
    if name.startswith("lm_head."):
        return "lm_head"
    if name.endswith("norm.weight") or name.startswith("norm_f."):
        return "norm"
    assert name.startswith("blocks.") and name.endswith(".weight"), name
    return "linear"


def decay_mask(params: Mapping[str, Any]) -> dict[str, bool]:
    """Levanter OptimizerConfig.build_weight_decay_mask: no decay on norms, embeddings and biases; Linear (incl.
    lm_head) decayed."""
    return {n: levanter_kind(n) in ("linear", "lm_head") for n in params}


# ---- running both sides -----------------------------------------------------------------------------------


def run_optax(tx: optax.GradientTransformation, params: Params, grads: list[Params], jit: bool = True) -> Params:
    """Apply `tx` to the gradient sequence in float64 JAX; one jitted step (compiled once, reused every step)."""

    def step(p: Any, state: Any, g: Any) -> tuple[Any, Any]:
        updates, state = tx.update(g, state, p)
        return optax.apply_updates(p, updates), state

    step_jit = jax.jit(step) if jit else step
    p = {n: jnp.asarray(v, dtype=jnp.float64) for n, v in params.items()}
    state = tx.init(p)
    for g in grads:
        p, state = step_jit(p, state, {n: jnp.asarray(v, dtype=jnp.float64) for n, v in g.items()})
    return {n: np.asarray(v) for n, v in p.items()}


def run_torch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    grads: list[Params],
    before_step: Callable[[torch.nn.Module], None] | None = None,
) -> Params:
    """Set each step's gradients on `model`'s float64 parameters and call optimizer.step()."""
    named = dict(model.named_parameters())
    for g in grads:
        for n, p in named.items():
            p.grad = torch.from_numpy(g[n].copy())
        if before_step is not None:
            before_step(model)
        optimizer.step()
    return {n: p.detach().numpy().copy() for n, p in named.items()}


def compare(ours: Params, theirs: Params, start: Params, rtol: float = 1e-9, atol: float = 1e-12) -> None:
    """Every parameter equal within tolerance, and every parameter really moved (the comparison is not vacuous)."""
    assert ours.keys() == theirs.keys()
    for n in ours:
        assert not np.array_equal(theirs[n], start[n]), f"{n}: the oracle did not move it"
        np.testing.assert_allclose(ours[n], theirs[n], rtol=rtol, atol=atol, err_msg=n)


def build_ours(name: str, model: torch.nn.Module, hparams: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Our optimizer `name` via its registered spec, with every hyperparameter the oracle depends on explicit."""
    from workers.optimizers import get_spec, resolve_hparams

    spec = get_spec(name)
    known = resolve_hparams(spec, "tiny")
    unknown = set(hparams) - set(known)
    assert not unknown, f"{name}: hyperparameters {sorted(unknown)} unknown to the spec"
    return spec.build(model, resolve_hparams(spec, "tiny", dict(hparams)))


def set_backend_steps(name: str, optimizer: torch.optim.Optimizer, rule: str, steps: int) -> None:
    """Newton-Schulz steps for `rule`'s groups: through the `backend_steps` hyperparameter once the spec has one
    (issue 14 item 2), else set on the group directly; either way the oracle's count is asserted on the group."""
    groups = [g for g in optimizer.param_groups if g.get("rule") == rule]
    assert groups, f"{name}: no {rule!r} param group"
    for g in groups:
        keys = [k for k in ("backend_steps", "ns_steps") if k in g]
        assert keys, f"{name}: the {rule!r} group holds no Newton-Schulz step count"
        for k in keys:
            g[k] = steps


def backend_steps_hparam(name: str, steps: int) -> dict[str, int]:
    """{"backend_steps": steps} when the spec knows the hyperparameter (issue 14 item 2), else {}."""
    from workers.optimizers import get_spec

    return {"backend_steps": steps} if "backend_steps" in get_spec(name).defaults else {}
