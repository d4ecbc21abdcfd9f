"""Adam-mini and Sophia-H against Levanter's transforms written with optax's tree utilities.

Sources (stanford-crfm/levanter src/levanter/optim/):
- adam_mini.py MiniConfig: labels embedding / lm_head / query / key / value / output / linear (a "mini" chain each:
  scale_with_mini -> add_decayed_weights -> scale(-lr), no clip) and "adamw" for everything else (clip ->
  scale_by_adam -> decay -> -lr). scale_with_mini: m = update_moment(g, m, b1); v = b2 v + (1 - b2) mean(g^2)
  over the label's mean axes, repeated to full size; bias corrections with the count; m_hat / (sqrt(v_hat) + eps).
  Levanter's mean axes act on its (layer, ...) stacked named arrays; on our (out, in) weights they are: embedding
  and lm_head per row (axis 1); query (2,3,4) and key (2,3) per head; value (3,), output (2,3) and linear (2,) per
  output row.
- sophia.py _sophia_gradient_transform: mu = (1 - b1) g + b1 mu; u = clip(mu_hat / max(gamma h, eps), -1, 1) from
  the OLD h (mu_hat with count + 1); count += 1; when count % update_interval == 0, h = (1 - b2) z * Hz + b2 h with
  Hz the Hessian-vector product at the pre-update parameters (stochastic_hessian_diagonal). Then decay, -lr.
  Levanter draws z from jax.random; to compare step by step the oracle replays our optimizer's probe stream (the
  probes are inputs, like the gradients): torch.randn per parameter from a generator seeded with Levanter's
  rng_seed 0, in parameter order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from tests.oracles.optax_harness import (
    CONFIG,
    build_ours,
    compare,
    decay_mask,
    gradient_sequence,
    initial_params,
    levanter_kind,
    run_optax,
    run_torch,
    small_model,
)
from workers.optimizers.sophia import SophiaH

# ---- Adam-mini ----------------------------------------------------------------------------------------------


class MiniState(NamedTuple):
    steps: jax.Array  # Levanter's `count`
    mu: Any
    nu: Any


def scale_with_mini(b1: float, b2: float, eps: float, block_mean: Callable[[jax.Array], jax.Array]) -> Any:
    """Levanter scale_with_mini; `block_mean(g2)` returns the per-block mean of g^2 repeated to g's shape."""

    def init_fn(params: Any) -> MiniState:
        return MiniState(jnp.zeros([], jnp.int32), optax.tree.zeros_like(params), optax.tree.zeros_like(params))

    def update_fn(updates: Any, state: MiniState, params: Any = None) -> tuple[Any, MiniState]:
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = jax.tree.map(lambda g, v: v * b2 + block_mean(g * g) * (1 - b2), updates, state.nu)
        count = optax.safe_increment(state.steps)
        mu_hat = optax.tree.bias_correction(mu, b1, count)
        nu_hat = optax.tree.bias_correction(nu, b2, count)
        out = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu_hat, nu_hat)
        return out, MiniState(count, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def per_row(g2: jax.Array) -> jax.Array:
    return jnp.broadcast_to(g2.mean(axis=1, keepdims=True), g2.shape)


def per_head(g2: jax.Array) -> jax.Array:
    heads = g2.reshape(CONFIG.n_heads, CONFIG.head_dim, g2.shape[1])  # (heads, head_dim, in)
    return jnp.broadcast_to(heads.mean(axis=(1, 2), keepdims=True), heads.shape).reshape(g2.shape)


def levanter_label(name: str) -> str:
    """MiniConfig.create_mask on our parameter names (q_proj = wq, k_proj = wk, v_proj = wv, o_proj = wo)."""
    kind = levanter_kind(name)
    if kind in ("embedding", "lm_head"):
        return kind
    if kind == "norm":
        return "adamw"
    for ours, label in (("attn.wq.", "query"), ("attn.wk.", "key"), ("attn.wv.", "value"), ("attn.wo.", "output")):
        if ours in name:
            return label
    return "linear"


def levanter_mini(lr: float, wd: float, b1: float, b2: float, eps: float, max_grad_norm: float) -> Any:
    def mini(block_mean: Callable[[jax.Array], jax.Array]) -> Any:
        return optax.chain(
            scale_with_mini(b1, b2, eps, block_mean), optax.add_decayed_weights(wd, decay_mask), optax.scale(-lr)
        )

    adamw = optax.chain(
        *([optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm else []),
        optax.scale_by_adam(b1, b2, eps),
        optax.add_decayed_weights(wd, decay_mask),
        optax.scale(-lr),
    )
    transforms = {
        "embedding": mini(per_row),
        "lm_head": mini(per_row),
        "query": mini(per_head),
        "key": mini(per_head),
        "value": mini(per_row),
        "output": mini(per_row),
        "linear": mini(per_row),
        "adamw": adamw,
    }
    return optax.multi_transform(transforms, lambda params: {n: levanter_label(n) for n in params})


@pytest.mark.parametrize("max_grad_norm", [0.0, 0.3])  # 0.3 < the norms' gradient norm (~1): the clip is active
def test_adam_mini_matches_levanter_chain(max_grad_norm: float) -> None:
    hp = {"lr": 3e-3, "wd": 0.1, "beta1": 0.9, "beta2": 0.98, "eps": 1e-15, "max_grad_norm": max_grad_norm}
    model = small_model()
    start = initial_params(model)
    grads = gradient_sequence(start)
    ours = run_torch(model, build_ours("adam_mini", model, hp), grads)
    theirs = run_optax(levanter_mini(3e-3, 0.1, 0.9, 0.98, 1e-15, max_grad_norm), start, grads)
    compare(ours, theirs, start)


# ---- Sophia-H -----------------------------------------------------------------------------------------------

SHAPES = {"a": (6, 5), "c": (4, 4), "b": (5,)}  # "a", "c" decayed matrices, "b" an undecayed vector
ORDER = ("a", "c", "b")  # parameter order of our optimizer's groups: the order probes are drawn in


def _problem(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """A smooth non-quadratic loss over the flattened parameters x: 0.25 sum(q x^4) + 0.5 x^T M x + r^T x."""
    rng = np.random.default_rng(seed)
    params = {n: rng.standard_normal(SHAPES[n]) for n in ORDER}
    n = sum(int(np.prod(s)) for s in SHAPES.values())
    off = 0.05 * rng.standard_normal((n, n))
    M = np.diag(rng.uniform(0.5, 2.0, n)) + off @ off.T  # SPD, diagonally dominant
    return params, M, rng.uniform(0.1, 1.0, n), rng.standard_normal(n)


def test_sophia_h_matches_levanter_transform() -> None:
    lr, wd, b1, b2, gamma, eps, interval = 0.05, 0.1, 0.9, 0.95, 1.0, 1e-12, 3
    start, M, q, r = _problem()

    # Ours, driven as the trainer drives a HessianOptimizer.
    ours = {n: torch.nn.Parameter(torch.from_numpy(start[n].copy())) for n in ORDER}
    Mt, qt, rt = (torch.from_numpy(x) for x in (M, q, r))

    def loss_torch() -> torch.Tensor:
        x = torch.cat([ours[n].reshape(-1) for n in ORDER])
        return 0.25 * (qt * x**4).sum() + 0.5 * x @ (Mt @ x) + rt @ x

    groups = [{"params": [ours["a"], ours["c"]], "weight_decay": wd}, {"params": [ours["b"]], "weight_decay": 0.0}]
    optimizer = SophiaH(groups, lr=lr, beta1=b1, beta2=b2, gamma=gamma, eps=eps, update_interval=interval, seed=0)
    for _ in range(20):
        params = [ours[n] for n in ORDER]
        if optimizer.hessian_due():
            grads = torch.autograd.grad(loss_torch(), params, create_graph=True)
            optimizer.update_hessian(list(grads))
        else:
            grads = torch.autograd.grad(loss_torch(), params)
        for p, g in zip(params, grads, strict=True):
            p.grad = g.detach()
        optimizer.step()

    # Levanter's transform in JAX, gradients and Hessian-vector products by jax.grad / jax.jvp.
    Mj, qj, rj = (jnp.asarray(x) for x in (M, q, r))

    def loss_jax(p: dict[str, jax.Array]) -> jax.Array:
        x = jnp.concatenate([p[n].reshape(-1) for n in ORDER])
        return 0.25 * jnp.sum(qj * x**4) + 0.5 * x @ (Mj @ x) + rj @ x

    probes = torch.Generator().manual_seed(0)  # Levanter BaseSophiaConfig.rng_seed = 0
    pj = {n: jnp.asarray(start[n]) for n in ORDER}
    mu = {n: jnp.zeros_like(v) for n, v in pj.items()}
    h = {n: jnp.zeros_like(v) for n, v in pj.items()}
    for count in range(1, 21):  # Levanter's state.count after this step's increment
        g = jax.grad(loss_jax)(pj)
        mu = jax.tree.map(lambda gi, m: (1 - b1) * gi + b1 * m, g, mu)
        correction = 1 - b1**count  # bias_correction(mu, b1, state.count + 1)
        mu_hat = jax.tree.map(lambda m: m / correction, mu)  # noqa: B023 (used at once)
        raw = jax.tree.map(lambda m, hi: m / jnp.maximum(gamma * hi, eps), mu_hat, h)
        unclipped = sum(int((jnp.abs(x) < 1.0).sum()) for x in raw.values())
        u = jax.tree.map(lambda x: jnp.clip(x, -1.0, 1.0), raw)
        if count % interval == 0:  # HVP at the pre-update parameters
            z = {n: jnp.asarray(torch.randn(SHAPES[n], generator=probes, dtype=torch.float64).numpy()) for n in ORDER}
            hz = jax.jvp(jax.grad(loss_jax), (pj,), (z,))[1]
            h = jax.tree.map(lambda zi, hzi, hi: (1 - b2) * zi * hzi + b2 * hi, z, hz, h)
        u = {n: u[n] + (wd * pj[n] if n in ("a", "c") else 0.0) for n in ORDER}  # add_decayed_weights(mask)
        pj = {n: pj[n] - lr * u[n] for n in ORDER}

    assert optimizer.hessian_updates == 20 // interval
    # The Hessian estimate shapes the last step: a good share of the coordinates is not clipped to +-1.
    assert 0.2 < unclipped / sum(int(np.prod(s)) for s in SHAPES.values()) < 0.95, unclipped
    for n in ORDER:
        assert not np.array_equal(np.asarray(pj[n]), start[n])
        np.testing.assert_allclose(ours[n].detach().numpy(), np.asarray(pj[n]), rtol=1e-9, atol=1e-12, err_msg=n)
