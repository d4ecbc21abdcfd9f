"""Muon, Scion, AdamH and MuonH against optax chains built as Levanter's (and Marin's) configs build them.

Newton-Schulz comes from optax itself: `optax.contrib.orthogonalize_via_newton_schulz` (Frobenius
normalisation X / (||X||_F + eps), transpose when rows > cols, the quintic a X + (b A + c A^2) X), driven with the
coefficients and step count of Levanter's `zeropower_via_newtonschulz5`; inside a chain it is
`optax.contrib.scale_by_muon` with beta = 0 (no momentum, no bias correction: a pure orthogonalisation).

Sources:
- Muon: stanford-crfm/levanter src/levanter/optim/muon.py, MuonConfig.build: "muon" = scale_with_muon (sum-form
  momentum buf = mu buf + g, Nesterov g + mu buf, NS, * sqrt(max(1, out/in))) -> add_decayed_weights -> scale(-lr);
  "adamw" = clip_by_global_norm -> scale_by_adam -> add_decayed_weights -> scale(-adam_lr); Embedding and lm_head
  go to "adamw", Linear weights to "muon". optax.trace(nesterov=True) is exactly that sum-form momentum.
- Scion: levanter optim/scion.py: "scion" = EMA momentum (mu m + (1 - mu) g, optax.ema without debias), NS, shape
  scale, decay, -lr; "signum" = clip -> EMA(beta1) -> sign -> decay -> -signum_lr.
- AdamH / MuonH: marin-community/marin lib/levanter/src/levanter/optim/adamh.py, muonh.py: every sub-chain clipped
  on its own; the hyperball step new = p - lr u ||p|| / max(||u||, 1e-10), update = new ||p|| / ||new|| - p.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from optax.contrib import MuonDimensionNumbers, scale_by_muon

# Not re-exported by optax.contrib (0.2.8); the functions contrib.muon itself composes.
from optax.contrib._muon import orthogonalize_via_newton_schulz, scale_by_shape

from tests.oracles.optax_harness import (
    backend_steps_hparam,
    build_ours,
    compare,
    decay_mask,
    gradient_sequence,
    initial_params,
    levanter_kind,
    run_optax,
    run_torch,
    set_backend_steps,
    small_model,
)
from workers.optimizers._newton_schulz import KJ_COEFFICIENTS, newton_schulz, newton_schulz_many

# Levanter zeropower_via_newtonschulz5: a, b, c = (3.4445, -4.7750, 2.0315).
LEVANTER_NS = (3.4445, -4.7750, 2.0315)
# Our weights are torch (out, in): the reduction (fan-in) axis is 1, the output axis 0.
OUT_IN = MuonDimensionNumbers(reduction_axis=1, output_axis=0)


def _optax_newton_schulz(G: jax.Array, steps: int, eps: float) -> jax.Array:
    return orthogonalize_via_newton_schulz(G, jnp.asarray(LEVANTER_NS, dtype=G.dtype), steps, eps=eps)


# optax's orthogonalisation with Levanter's coefficients, compiled once per (shape, steps): eager calls re-trace.
optax_newton_schulz = jax.jit(_optax_newton_schulz, static_argnums=1)


def _dims(tree: Any) -> Any:
    return jax.tree.map(lambda _: OUT_IN, tree)


def newton_schulz_transform(steps: int, eps: float) -> optax.GradientTransformation:
    """optax's Newton-Schulz as a chain element: scale_by_muon with beta 0 returns NS(g) itself."""
    return scale_by_muon(
        ns_coeffs=LEVANTER_NS, ns_steps=steps, beta=0.0, eps=eps, nesterov=False, weight_dimension_numbers=_dims
    )


def shape_scale() -> optax.GradientTransformation:
    """sqrt(max(1, fan_out / fan_in)) = Levanter's sqrt(max(1, out/in)) for our (out, in) weights."""
    return scale_by_shape(weight_dimension_numbers=_dims)


def hyperball(lr: float) -> optax.GradientTransformation:
    """Marin's scale_invariant_update (2-D case) as a transformation of the direction u."""

    def step(p: jax.Array, u: jax.Array) -> jax.Array:
        new = p - lr * u * jnp.linalg.norm(p) / jnp.maximum(jnp.linalg.norm(u), 1e-10)
        return new / jnp.linalg.norm(new) * jnp.linalg.norm(p) - p

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        return jax.tree.map(step, params, updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def scale_by_adamh(b1: float, b2: float, eps: float, lr: float) -> optax.GradientTransformation:
    """Marin's scale_by_adamh: optax's Adam direction (bias-corrected, eps outside the sqrt), then the hyperball."""
    return optax.chain(optax.scale_by_adam(b1, b2, eps), hyperball(lr))


def _labels(table: dict[str, str]) -> Any:
    return lambda params: {n: table[levanter_kind(n)] for n in params}


def _clip(max_grad_norm: float) -> list[optax.GradientTransformation]:
    return [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm else []


def _run(name: str, hparams: dict[str, Any], rule: str, steps: int, tx: optax.GradientTransformation) -> None:
    model = small_model()
    start = initial_params(model)
    grads = gradient_sequence(start)
    optimizer = build_ours(name, model, {**hparams, **backend_steps_hparam(name, steps)})
    set_backend_steps(name, optimizer, rule, steps)
    ours = run_torch(model, optimizer, grads)
    compare(ours, run_optax(tx, start, grads), start)


# ---- Newton-Schulz itself --------------------------------------------------------------------------------


def test_coefficients_are_optax_standard_preset() -> None:
    # optax.contrib.muon's default ("standard") coefficients are Keller Jordan's, as Levanter's literal.
    from optax.contrib import _muon

    assert KJ_COEFFICIENTS == tuple(_muon._NS_COEFFS_PRESET_DICT["standard"]) == LEVANTER_NS


@pytest.mark.parametrize("shape", [(32, 96), (96, 32), (48, 48), (1, 16)])
@pytest.mark.parametrize("steps", [5, 10])
def test_newton_schulz_matches_optax(shape: tuple[int, int], steps: int) -> None:
    G = np.random.default_rng(sum(shape) + steps).standard_normal(shape)
    for scale, eps in ((1.0, 1e-7), (1e-6, 1e-5)):  # the second: ||G|| ~ eps, where eps's placement matters
        theirs = optax_newton_schulz(jnp.asarray(scale * G), steps, eps)
        ours = newton_schulz(torch.from_numpy(scale * G), steps=steps, eps=eps)
        np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), rtol=1e-11, atol=1e-12)


def test_batched_newton_schulz_matches_optax() -> None:
    rng = np.random.default_rng(3)
    shapes = [(48, 48), (128, 48), (48, 128), (48, 48), (128, 48)]
    Gs = [rng.standard_normal(s) * 10.0 ** rng.integers(-3, 3) for s in shapes]
    outs = newton_schulz_many([torch.from_numpy(G) for G in Gs], steps=10, eps=1e-7)
    for G, out in zip(Gs, outs, strict=True):
        theirs = optax_newton_schulz(jnp.asarray(G), 10, 1e-7)
        np.testing.assert_allclose(out.numpy(), np.asarray(theirs), rtol=1e-11, atol=1e-12)


def test_torch_muon_momentum_and_scaling_match_optax_when_newton_schulz_is_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # torch.optim.Muon (EMA momentum, Nesterov lerp, adjust_lr "original", decay with the unadjusted lr) against
    # our Muon's matrix rule, with torch's bf16 Newton-Schulz swapped for optax's float64 one (not ours: the
    # point is that both sides orthogonalise with the same independent code). Momentum EMA and sum forms are
    # proportional, and NS divides by the norm, so with eps ~ 0 they must agree to rounding.
    import torch.optim._muon as torch_muon

    from workers.optimizers.muon import Muon

    def ns_optax(grad: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float) -> torch.Tensor:
        assert tuple(coefficients) == LEVANTER_NS
        out = optax_newton_schulz(jnp.asarray(grad.double().numpy()), steps, eps)
        return torch.from_numpy(np.asarray(out).copy())

    monkeypatch.setattr(torch_muon, "_zeropower_via_newtonschulz", ns_optax)
    rng = np.random.default_rng(7)
    shapes = [(32, 32), (128, 32), (32, 128), (48, 80)]
    start = [0.02 * rng.standard_normal(s) for s in shapes]
    ours = [torch.nn.Parameter(torch.from_numpy(s.copy())) for s in start]
    theirs = [torch.nn.Parameter(torch.from_numpy(s.copy())) for s in start]
    group = {"rule": "muon", "params": ours, "lr": 0.02, "weight_decay": 0.1, "momentum": 0.95, "nesterov": True}
    group.update({"ns_steps": 5, "ns_eps": 1e-30})
    opt_ours = Muon([group])
    set_backend_steps("muon", opt_ours, "muon", 5)
    opt_torch = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1, momentum=0.95, eps=1e-30, adjust_lr_fn="original")
    for _ in range(20):
        for a, b in zip(ours, theirs, strict=True):
            g = torch.from_numpy(rng.standard_normal(a.shape))
            a.grad, b.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_torch.step()
    for a, b, s in zip(ours, theirs, start, strict=True):
        assert not np.array_equal(b.detach().numpy(), s)
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-13)


# ---- Muon ---------------------------------------------------------------------------------------------------


def levanter_muon(hp: dict[str, Any], steps: int) -> optax.GradientTransformation:
    lr, adam_lr, wd = hp["lr"], hp["lr"] * hp["muon_to_adam_lr"], hp["wd"]
    muon = optax.chain(
        optax.trace(decay=hp["momentum"], nesterov=True),  # buf = mu buf + g; u = g + mu buf
        newton_schulz_transform(steps, hp["muon_eps"]),
        shape_scale(),
        optax.add_decayed_weights(wd, decay_mask),
        optax.scale(-lr),
    )
    adamw = optax.chain(
        *_clip(hp["max_grad_norm"]),
        optax.scale_by_adam(hp["beta1"], hp["beta2"], hp["eps"]),
        optax.add_decayed_weights(wd, decay_mask),
        optax.scale(-adam_lr),
    )
    table = {"embedding": "adamw", "lm_head": "adamw", "linear": "muon", "norm": "adamw"}
    return optax.multi_transform({"muon": muon, "adamw": adamw}, _labels(table))


MUON_HP = {
    "lr": 0.02,
    "muon_to_adam_lr": 0.2,
    "wd": 0.1,
    "momentum": 0.95,
    "beta1": 0.8,
    "beta2": 0.98,
    "eps": 1e-15,
    "muon_eps": 1e-5,
    "max_grad_norm": 1.0,  # the AdamW part's gradient norm is ~6 here: the clip is active
}


def test_muon_matches_levanter_chain() -> None:
    # backend_steps 10: Levanter MuonConfig versions with muon_to_adam_lr (the paper's sweep) default to 10.
    _run("muon", MUON_HP, "muon", 10, levanter_muon(MUON_HP, 10))


def test_muon_five_steps_without_clip_matches_levanter_chain() -> None:
    # backend_steps 5: the MuonConfig versions with adam_lr / muon_epsilon default to 5.
    hp = {**MUON_HP, "max_grad_norm": 0.0, "muon_eps": 1e-8}
    _run("muon", hp, "muon", 5, levanter_muon(hp, 5))


# ---- Scion --------------------------------------------------------------------------------------------------


def levanter_scion(hp: dict[str, Any], steps: int) -> optax.GradientTransformation:
    lr, signum_lr, wd = hp["lr"], hp["lr"] * hp["scion_to_signum_lr"], hp["wd"]
    scion = optax.chain(
        optax.ema(hp["momentum"], debias=False),  # m = mu m + (1 - mu) g
        newton_schulz_transform(steps, hp["scion_eps"]),
        shape_scale(),
        optax.add_decayed_weights(wd, decay_mask),
        optax.scale(-lr),
    )
    signum = optax.chain(
        *_clip(hp["max_grad_norm"]),
        optax.ema(hp["beta1"], debias=False),
        optax.scale_by_sign(),
        optax.add_decayed_weights(wd, decay_mask),
        optax.scale(-signum_lr),
    )
    table = {"embedding": "signum", "lm_head": "signum", "linear": "scion", "norm": "signum"}
    return optax.multi_transform({"scion": scion, "signum": signum}, _labels(table))


SCION_HP = {
    "lr": 0.02,
    "scion_to_signum_lr": 0.25,
    "wd": 0.1,
    "momentum": 0.95,
    "beta1": 0.9,
    "scion_eps": 1e-8,
    "max_grad_norm": 1.0,
}


def test_scion_matches_levanter_chain() -> None:
    _run("scion", SCION_HP, "scion", 10, levanter_scion(SCION_HP, 10))  # Levanter ScionConfig backend_steps = 10


# ---- AdamH and MuonH (Marin) ------------------------------------------------------------------------------


def marin_adamh(hp: dict[str, Any]) -> optax.GradientTransformation:
    adamh = optax.chain(*_clip(hp["max_grad_norm"]), scale_by_adamh(hp["beta1"], hp["beta2"], hp["eps"], hp["lr"]))
    adam = optax.chain(
        *_clip(hp["max_grad_norm"]),
        optax.scale_by_adam(hp["beta1"], hp["beta2"], hp["eps"]),
        optax.scale(-hp["adam_lr"]),
    )
    # AdamHConfig.create_mask: Embedding -> adam; every Linear (lm_head included) -> adamh; the rest -> adam.
    table = {"embedding": "adam", "lm_head": "adamh", "linear": "adamh", "norm": "adam"}
    return optax.multi_transform({"adamh": adamh, "adam": adam}, _labels(table))


ADAMH_HP = {"lr": 0.02, "adam_lr": 0.008, "beta1": 0.9, "beta2": 0.98, "eps": 1e-20, "max_grad_norm": 1.0}


def test_adamh_matches_marin_chain() -> None:
    model = small_model()
    start = initial_params(model)
    grads = gradient_sequence(start)
    ours = run_torch(model, build_ours("adamh", model, ADAMH_HP), grads)
    compare(ours, run_optax(marin_adamh(ADAMH_HP), start, grads), start)


def marin_muonh(hp: dict[str, Any], steps: int) -> optax.GradientTransformation:
    muonh = optax.chain(
        *_clip(hp["max_grad_norm"]),
        optax.trace(decay=hp["momentum"], nesterov=True),
        newton_schulz_transform(steps, hp["muon_eps"]),  # no shape scale in MuonH
        hyperball(hp["lr"]),
    )
    adamh = optax.chain(*_clip(hp["max_grad_norm"]), scale_by_adamh(hp["beta1"], hp["beta2"], hp["eps"], hp["lr"]))
    adam = optax.chain(
        *_clip(hp["max_grad_norm"]),
        optax.scale_by_adam(hp["beta1"], hp["beta2"], hp["eps"]),
        optax.scale(-hp["adam_lr"]),
    )
    # MuonHConfig.create_mask: Embedding -> adam; lm_head -> adamh; other Linear -> muonh; the rest -> adam.
    table = {"embedding": "adam", "lm_head": "adamh", "linear": "muonh", "norm": "adam"}
    return optax.multi_transform({"muonh": muonh, "adamh": adamh, "adam": adam}, _labels(table))


MUONH_HP = {
    "lr": 0.02,
    "adam_lr": 0.008,
    "momentum": 0.95,
    "beta1": 0.9,
    "beta2": 0.98,
    "eps": 1e-15,
    "muon_eps": 1e-5,
    "max_grad_norm": 1.0,
}


def test_muonh_matches_marin_chain() -> None:
    _run("muonh", MUONH_HP, "muonh", 5, marin_muonh(MUONH_HP, 5))  # Marin MuonHConfig backend_steps = 5
