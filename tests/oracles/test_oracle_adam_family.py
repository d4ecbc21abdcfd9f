"""AdamW, NAdamW, Lion, Cautious and MARS against optax chains built as Levanter's configs build them.

Sources (stanford-crfm/levanter src/levanter/optim/): config.py AdamConfig (scale_by_adam(b1, b2, eps,
nesterov) -> add_decayed_weights(wd, mask) -> scale(-lr)), LionConfig (scale_by_lion), cautious.py
(scale_by_cautious), mars.py (scale_by_mars). The global-norm clip that Levanter puts first in the AdamW, NAdamW,
Lion and Cautious chains is the trainer's job here (workers/trainer.py), so it is left out of both sides; MARS
clips inside its own transform, so it is in both.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
import pytest

from tests.oracles.optax_harness import (
    build_ours,
    compare,
    decay_mask,
    gradient_sequence,
    initial_params,
    run_optax,
    run_torch,
    small_model,
)

LR, WD = 3e-3, 0.1


def _levanter_chain(scale_by: optax.GradientTransformation, lr: float = LR, wd: float = WD) -> Any:
    return optax.chain(scale_by, optax.add_decayed_weights(wd, decay_mask), optax.scale(-lr))


def _parity(name: str, hparams: dict[str, Any], scale_by: optax.GradientTransformation, **tol: float) -> None:
    model = small_model()
    start = initial_params(model)
    grads = gradient_sequence(start)
    ours = run_torch(model, build_ours(name, model, {"lr": LR, "wd": WD, **hparams}), grads)
    theirs = run_optax(_levanter_chain(scale_by), start, grads)
    compare(ours, theirs, start, **tol)


@pytest.mark.parametrize("eps", [1e-8, 1e-20])
def test_adamw_matches_optax_scale_by_adam(eps: float) -> None:
    _parity("adamw", {"beta1": 0.9, "beta2": 0.95, "eps": eps}, optax.scale_by_adam(0.9, 0.95, eps))


@pytest.mark.parametrize("beta1", [0.9, 0.95])
def test_nadamw_matches_optax_scale_by_adam_nesterov(beta1: float) -> None:
    # Levanter's nadam: AdamConfig(nesterov=True) -> optax.scale_by_adam(..., nesterov=True).
    scale_by = optax.scale_by_adam(beta1, 0.98, 1e-15, nesterov=True)
    _parity("nadamw", {"beta1": beta1, "beta2": 0.98, "eps": 1e-15}, scale_by)


def test_lion_matches_optax_scale_by_lion() -> None:
    # Levanter LionConfig: scale_by_lion(b1, b2), decay lr * wd (not lion-pytorch's wd / lr form).
    _parity("lion", {"beta1": 0.9, "beta2": 0.95}, optax.scale_by_lion(0.9, 0.95), rtol=1e-12, atol=1e-14)


def test_lion_matches_lion_pytorch() -> None:
    # lucidrains/lion-pytorch: p <- p (1 - lr wd); p <- p - lr sign(b1 m + (1-b1) g); m <- b2 m + (1-b2) g.
    # With decoupled_weight_decay=False its decay is lr * wd, as Levanter's; it has no decay mask, so wd = 0.
    from lion_pytorch import Lion as LucidrainsLion

    model, theirs_model = small_model(), small_model()
    start = initial_params(model)
    grads = gradient_sequence(start)
    ours = run_torch(model, build_ours("lion", model, {"lr": LR, "wd": 0.0, "beta1": 0.9, "beta2": 0.99}), grads)
    lucid = LucidrainsLion(theirs_model.parameters(), lr=LR, betas=(0.9, 0.99), weight_decay=0.0)
    theirs = run_torch(theirs_model, lucid, grads)
    compare(ours, theirs, start, rtol=1e-12, atol=1e-14)


# ---- Cautious: Levanter's scale_by_cautious on optax's scale_by_adam ----------------------------------------


def scale_by_cautious(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """Levanter cautious.py: u = Adam's bias-corrected update; mask = (g u > 0); u <- u mask / (mean(mask) + eps).

    The Adam moments are optax's own scale_by_adam (Levanter recomputes the same formula inline).
    """
    adam = optax.scale_by_adam(b1, b2, eps)

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        adam_updates, state = adam.update(updates, state, params)

        def mask(u: jax.Array, g: jax.Array) -> jax.Array:
            m = (g * u > 0).astype(u.dtype)
            return u * m / (m.mean() + eps)

        return jax.tree.map(mask, adam_updates, updates), state

    return optax.GradientTransformation(adam.init, update_fn)


@pytest.mark.parametrize("eps", [1e-8, 1e-15])
def test_cautious_matches_levanter_scale_by_cautious(eps: float) -> None:
    _parity("cautious", {"beta1": 0.9, "beta2": 0.98, "eps": eps}, scale_by_cautious(0.9, 0.98, eps))


# ---- MARS: Levanter's scale_by_mars (the clip of c inside), Adam from optax ----------------------------------


class MarsState(NamedTuple):
    previous: Any  # Levanter's `mog`: the previous raw gradient
    adam: Any


def scale_by_mars(b1: float, b2: float, gamma: float, eps: float, max_grad_norm: float) -> optax.GradientTransformation:
    """Levanter mars.py: c = g + gamma b1 / (1 - b1) (g - g_prev); c *= min(1, max_norm / (||c||_global + 1e-6));
    then Adam on c (optax scale_by_adam); the stored previous gradient is the raw g."""
    adam = optax.scale_by_adam(b1, b2, eps)

    def init_fn(params: Any) -> MarsState:
        return MarsState(optax.tree.zeros_like(params), adam.init(params))

    def update_fn(updates: Any, state: MarsState, params: Any = None) -> tuple[Any, MarsState]:
        c = jax.tree.map(lambda g, prev: g + (gamma * b1 / (1 - b1)) * (g - prev), updates, state.previous)
        if max_grad_norm:
            scale = jnp.minimum(1.0, max_grad_norm / (optax.tree.norm(c) + 1e-6))
            c = jax.tree.map(lambda x: x * scale, c)
        out, adam_state = adam.update(c, state.adam, params)
        return out, MarsState(updates, adam_state)

    return optax.GradientTransformation(init_fn, update_fn)


@pytest.mark.parametrize("max_grad_norm", [0.0, 1.0])  # 1.0 < ||c|| (~3 here): the clip is active
def test_mars_matches_levanter_scale_by_mars(max_grad_norm: float) -> None:
    hp = {"beta1": 0.95, "beta2": 0.99, "gamma": 0.025, "eps": 1e-8, "max_grad_norm": max_grad_norm}
    _parity("mars", hp, scale_by_mars(0.95, 0.99, 0.025, 1e-8, max_grad_norm))
