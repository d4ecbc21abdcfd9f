"""PSGD Kron against Levanter's scale_by_kron written in JAX (float64) for one 2-D block.

Source: stanford-crfm/levanter src/levanter/optim/kron.py: KronConfig.build (clip_by_global_norm only when
normalize_grads is off -> scale_by_kron -> optax.clip_by_block_rms(1.1) -> add_decayed_weights -> -lr),
scale_by_kron's update_fn (norm_grads g / (||g|| + 1e-16); mu = update_moment(g, mu, b1), m_hat by bias
correction with count_inc; update_counter_inc >= 1 / precond_update_prob_schedule(count_inc) decides an update;
damping g + sqrt(eps_f32) mean|g| V; _conjB; _update_precond with exprA / exprGs; then _precond_grad with the new
Q), _norm_lower_bound, _init_Q_exprs (Q = init_scale^(1/ndim) I). For our 2-D (r, c) block the einsum
expressions are A = Q_L G Q_R^T, term1 = A A^T (left) / A^T A (right), conjB = Q_L^-T V Q_R^-1 and the
preconditioned gradient Q_L^T Q_L G Q_R^T Q_R.

Levanter draws V with jax.random; the oracle replays our optimizer's draws (torch.randn of the block's shape from
a generator seeded like ours) so that both sides see the same probe, as they see the same gradients.
Both sides run without merge_small_dims (scale_by_kron's own default; KronConfig turns it on): Levanter's
dim2loss merge would flatten 96 x 100 into one 9600 vector (tests/workers/optimizers/test_merge_dims.py checks the
merge itself), and this oracle is of the 2-D math: dense triangular (max_size_triangular 25000) and unblocked
(block_size 256).
"""

from __future__ import annotations

import inspect
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import tests.oracles.optax_harness  # noqa: F401  (float64 JAX)
from workers.optimizers.kron import Kron

SHAPE = (96, 100)
DAMP_EPS = float(np.sqrt(np.finfo(np.float32).eps))  # Levanter: jnp.sqrt(jnp.finfo(jnp.float32).eps)


def norm_lower_bound(a: jnp.ndarray) -> jnp.ndarray:
    max_abs = jnp.max(jnp.abs(a))
    a = a / max_abs
    x = a[:, jnp.argmax(jnp.sum(a * a, axis=0))]
    x = x @ a
    return max_abs * jnp.linalg.norm((x / jnp.linalg.norm(x)) @ a.T)


def levanter_kron(start: np.ndarray, grads: list[np.ndarray], hp: dict[str, Any], seed: int) -> np.ndarray:
    tiny = np.finfo(np.float64).tiny  # _add_tiny in the factors' dtype (float64 here)
    probes = torch.Generator().manual_seed(seed)
    p = jnp.asarray(start)
    mu = jnp.zeros_like(p)
    scale = hp["init_scale"] ** (1 / 2)
    ql, qr = scale * jnp.eye(SHAPE[0]), scale * jnp.eye(SHAPE[1])
    update_counter = 0
    for count, g_np in enumerate(grads, start=1):
        g = jnp.asarray(g_np)
        g = g / (jnp.linalg.norm(g) + 1e-16)  # normalize_grads
        mu = (1 - hp["b1"]) * g + hp["b1"] * mu
        m_hat = mu / (1 - hp["b1"] ** count)
        prob = np.clip(np.exp(-0.001 * (count - hp["flat_start"])), hp["min_prob"], 1.0)
        update_counter += 1
        if update_counter >= 1 / prob:
            update_counter = 0
            v = jnp.asarray(torch.randn((1, *SHAPE), generator=probes, dtype=torch.float64).numpy()[0])
            g_in = m_hat + DAMP_EPS * jnp.mean(jnp.abs(m_hat)) * v
            conj = v.T
            conj = jnp.linalg.solve(ql.T, conj.T).T  # conjB @ inv(Q_L), computed as a solve: V^T Q_L^-1
            conj = conj.T  # swapaxes: Q_L^-T V
            conj = jnp.linalg.solve(qr.T, conj.T).T  # conjB @ inv(Q_R)
            a = ql @ g_in @ qr.T
            new = []
            for q, t1, t2 in ((ql, a @ a.T, conj @ conj.T), (qr, a.T @ a, conj.T @ conj)):
                new.append(q - hp["precond_lr"] / (norm_lower_bound(t1 + t2) + tiny) * jnp.triu(t1 - t2) @ q)
            ql, qr = new
        u = ql.T @ ql @ m_hat @ qr.T @ qr
        u, _ = optax.clip_by_block_rms(1.1).update(u, optax.EmptyState())
        p = p - hp["lr"] * (u + hp["wd"] * p)
    return np.asarray(p)


@pytest.mark.parametrize("flat_start", [30, 10])  # 30: an update every step; 10: every other step after step 10
def test_kron_matches_levanter_scale_by_kron(flat_start: int) -> None:
    hp = {"lr": 3e-3, "wd": 0.5, "b1": 0.95, "precond_lr": 0.2, "init_scale": 1.0, "min_prob": 0.05}
    hp["flat_start"] = flat_start
    rng = np.random.default_rng(9)
    start = 0.05 * rng.standard_normal(SHAPE)
    # Anisotropic gradients, so that the whitening preconditioner has something to learn.
    row_scale = np.exp(rng.uniform(-1.5, 1.5, (SHAPE[0], 1)))
    grads = [row_scale * rng.standard_normal(SHAPE) for _ in range(20)]

    param = torch.nn.Parameter(torch.from_numpy(start.copy()))
    kwargs: dict[str, Any] = dict(
        lr=hp["lr"],
        beta1=hp["b1"],
        weight_decay=hp["wd"],
        preconditioner_lr=hp["precond_lr"],
        preconditioner_init_scale=hp["init_scale"],
        block_size=256,
        partition_grads_into_blocks=True,
        max_size_triangular=25000,
        min_ndim_triangular=2,
        normalize_grads=True,
        max_grad_norm=1.0,  # inactive with normalize_grads, as in Levanter
        preconditioner_update_probability=hp["min_prob"],
        update_prob_flat_start=flat_start,
        seed=0,
    )
    if "merge_small_dims" in inspect.signature(Kron).parameters:  # issue 14 item 3: off, as scale_by_kron's
        kwargs["merge_small_dims"] = False
    optimizer = Kron([param], **kwargs)
    for g in grads:
        param.grad = torch.from_numpy(g.copy())
        optimizer.step()

    theirs = levanter_kron(start, grads, hp, seed=0)
    assert not np.allclose(theirs, start * (1 - hp["lr"] * hp["wd"]) ** 20)
    np.testing.assert_allclose(param.detach().numpy(), theirs, rtol=1e-8, atol=1e-11)
