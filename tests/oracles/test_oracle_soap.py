"""SOAP against Levanter's scale_by_soap written in JAX (float64) for 2-D blocks.

Source: stanford-crfm/levanter src/levanter/optim/soap.py (update_fn, init_step, update_step, project,
project_back, update_preconditioner, get_orthogonal_matrix, get_orthogonal_matrix_QR). Per block B of a matrix:
- count 1 (init_step): GG_L = lerp(0, B B^T, 1 - shampoo_beta), GG_R = lerp(0, B^T B, 1 - shampoo_beta);
  Q = eigh(GG + eps I) eigenvectors flipped to descending order; the update is zero; exp_avg is not touched.
- count t >= 2 (update_step): exp_avg = update_moment(G, exp_avg, b1) in the original basis;
  G' = Q_L^T B Q_R; exp_avg_sq = b2 v + (1 - b2) G'^2; u = Q_L (Q_L^T M Q_R / (sqrt(v) + eps)) Q_R^T *
  sqrt(1 - b2^t) / (1 - b1^t); GG <- lerp(GG_old, outer, 1 - shampoo_beta); when t % precondition_frequency == 0,
  get_orthogonal_matrix_QR with the OLD GG: est = diag(Q^T GG Q), sort descending, permute v along that side,
  Q = qr(GG Q[:, order]).
Then add_decayed_weights and scale(-lr).

Why square 48 x 48 matrices: with a rank-deficient factor (a vector's n x n factor G G^T has rank 1; so has the
left factor of a tall block) eps I makes the eigenvalues of the null space equal, any basis of it is an eigh
result, and SOAP's later updates depend on which one LAPACK returns, so no two implementations agree there. A
square Gaussian block is full rank on both sides. Both run without merge_small_dims (scale_by_soap's default;
SoapConfig turns it on): Levanter's dim2loss merge would flatten 48 x 48 into one 2304 vector (the merge itself is
checked in tests/workers/optimizers/test_merge_dims.py), and this oracle is of the 2-D math.
"""

from __future__ import annotations

import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import tests.oracles.optax_harness  # noqa: F401  (float64 JAX)
from workers.optimizers.soap import SOAP

SHAPE = (48, 48)


def _blocks(x: jax.Array, size: int) -> list[tuple[slice, slice]]:
    rows = [slice(i, min(i + size, x.shape[0])) for i in range(0, x.shape[0], size)]
    cols = [slice(j, min(j + size, x.shape[1])) for j in range(0, x.shape[1], size)]
    return [(r, c) for r in rows for c in cols]


def levanter_soap(
    start: np.ndarray,
    grads: list[np.ndarray],
    *,
    lr: float,
    wd: float,
    b1: float,
    b2: float,
    shampoo_beta: float,
    eps: float,
    frequency: int,
    block: int,
) -> np.ndarray:
    p = jnp.asarray(start)
    m = jnp.zeros_like(p)
    tiles = _blocks(p, block)
    state: list[dict[str, Any]] = [{} for _ in tiles]
    for t, g_np in enumerate(grads, start=1):
        g = jnp.asarray(g_np)
        update = jnp.zeros_like(p)
        if t > 1:
            m = (1 - b1) * g + b1 * m  # otu.tree_update_moment in the original basis
        for (rows, cols), s in zip(tiles, state, strict=True):
            B = g[rows, cols]
            outer_l, outer_r = B @ B.T, B.T @ B
            if t == 1:
                s["GL"], s["GR"] = (1 - shampoo_beta) * outer_l, (1 - shampoo_beta) * outer_r
                s["QL"] = jnp.flip(jnp.linalg.eigh(s["GL"] + eps * jnp.eye(B.shape[0]))[1], axis=1)
                s["QR"] = jnp.flip(jnp.linalg.eigh(s["GR"] + eps * jnp.eye(B.shape[1]))[1], axis=1)
                s["v"] = jnp.zeros_like(B)
                continue
            QL, QR = s["QL"], s["QR"]
            s["v"] = b2 * s["v"] + (1 - b2) * (QL.T @ B @ QR) ** 2
            direction = (QL.T @ m[rows, cols] @ QR) / (jnp.sqrt(s["v"]) + eps)
            update = update.at[rows, cols].set(QL @ direction @ QR.T * (np.sqrt(1 - b2**t) / (1 - b1**t)))
            old_l, old_r = s["GL"], s["GR"]
            s["GL"] = old_l + (1 - shampoo_beta) * (outer_l - old_l)  # lerp
            s["GR"] = old_r + (1 - shampoo_beta) * (outer_r - old_r)
            if t % frequency == 0:
                order = jnp.argsort(jnp.diag(QL.T @ old_l @ QL), descending=True)
                s["v"] = jnp.take(s["v"], order, axis=0)
                s["QL"] = jnp.linalg.qr(old_l @ QL[:, order])[0]
                order = jnp.argsort(jnp.diag(QR.T @ old_r @ QR), descending=True)
                s["v"] = jnp.take(s["v"], order, axis=1)
                s["QR"] = jnp.linalg.qr(old_r @ QR[:, order])[0]
        p = p - lr * (update + wd * p)  # add_decayed_weights, scale(-lr)
    return np.asarray(p)


@pytest.mark.parametrize(("frequency", "block"), [(1, 24), (3, 256)])  # blocked 2 x 2, and one unblocked block
def test_soap_matches_levanter_scale_by_soap(frequency: int, block: int) -> None:
    hp = {"lr": 0.01, "wd": 0.1, "b1": 0.9, "b2": 0.95, "shampoo_beta": 0.9, "eps": 1e-10}
    rng = np.random.default_rng(5)
    start = 0.1 * rng.standard_normal(SHAPE)
    grads = [rng.uniform(0.5, 2.0) * rng.standard_normal(SHAPE) for _ in range(20)]

    param = torch.nn.Parameter(torch.from_numpy(start.copy()))
    kwargs: dict[str, Any] = dict(
        lr=hp["lr"],
        betas=(hp["b1"], hp["b2"]),
        shampoo_beta=hp["shampoo_beta"],
        eps=hp["eps"],
        weight_decay=hp["wd"],
        precondition_frequency=frequency,
        max_precond_dim=10000,
        block_size=block,
        partition_grads_into_blocks=True,
    )
    if "merge_small_dims" in inspect.signature(SOAP).parameters:  # issue 14 item 3: off, as scale_by_soap's
        kwargs["merge_small_dims"] = False
    optimizer = SOAP([param], **kwargs)
    for g in grads:
        param.grad = torch.from_numpy(g.copy())
        optimizer.step()

    theirs = levanter_soap(start, grads, frequency=frequency, block=block, **hp)
    assert not np.allclose(theirs, start * (1 - hp["lr"] * hp["wd"]) ** 20)  # more than the decay moved it
    np.testing.assert_allclose(param.detach().numpy(), theirs, rtol=1e-8, atol=1e-11)
