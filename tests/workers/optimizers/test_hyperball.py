"""AdamH and MuonH (Hyperball, PAPER.md section 7, OPTIMIZERS.md section 4): the norm and angle identities,
scale invariance, a float64 oracle of Marin's update, routing, per-sub-chain clipping and the saved radius."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch

from workers.model import SCALES, Transformer, build_model, param_role
from workers.optimizers import get_spec, resolve_hparams
from workers.optimizers._newton_schulz import newton_schulz
from workers.optimizers.adamh import hyperball_step_

NAMES = ("adamh", "muonh")
HYPERBALL_ROLES = ("matrix", "head")  # both optimizers keep every Linear weight on its sphere


def tiny(dtype: torch.dtype = torch.float32, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return build_model(SCALES["tiny-130k"]).to(dtype)


def build(name: str, model: torch.nn.Module, **overrides: float) -> torch.optim.Optimizer:
    spec = get_spec(name)
    return spec.build(model, resolve_hparams(spec, "tiny", {"lr": 0.05, "adam_lr": 0.01, **overrides}))


def set_grads(model: torch.nn.Module, step: int, scale: dict[str, float] | None = None) -> None:
    gen = torch.Generator().manual_seed(3000 + step)
    for name, p in model.named_parameters():
        g = torch.randn(p.shape, generator=gen, dtype=torch.float64) * 1e-2
        p.grad = (g * (scale or {}).get(param_role(name), 1.0)).to(p.dtype)


def grads_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter's gradient by name."""
    out = {}
    for name, p in model.named_parameters():
        assert p.grad is not None
        out[name] = p.grad.clone()
    return out


def named(name: str) -> Callable[[str], str]:
    """assert_close's msg: prefix its message with the parameter name."""
    return lambda message: f"{name}: {message}"


def marin_update(p: torch.Tensor, u: torch.Tensor, lr: float) -> torch.Tensor:
    """Marin's scale_invariant_update for a 2-D p (lib/levanter/.../adamh.py), in float64."""
    new = p - lr * u * torch.linalg.matrix_norm(p) / torch.clamp(torch.linalg.matrix_norm(u), min=1e-10)
    return new / torch.linalg.matrix_norm(new) * torch.linalg.matrix_norm(p)


@pytest.mark.parametrize("name", NAMES)
def test_every_hyperball_matrix_keeps_its_initial_norm(name: str) -> None:
    model = tiny()
    optimizer = build(name, model, lr=0.2)  # large steps: any drift would show
    initial = {n: torch.linalg.matrix_norm(p.detach().double()) for n, p in model.named_parameters() if p.ndim == 2}
    for step in range(40):
        set_grads(model, step)
        optimizer.step()
    moved = 0
    for n, p in model.named_parameters():
        if param_role(n) in HYPERBALL_ROLES:
            norm = torch.linalg.matrix_norm(p.detach().double())
            assert float(abs(norm - initial[n]) / initial[n]) < 1e-5, n
            assert float(optimizer.state[p]["radius"]) == pytest.approx(float(initial[n]), rel=1e-6)
            moved += 1
    assert moved == 7 * model.config.n_layers + 1
    # the Adam part (embedding) is free to change its norm
    emb = model.tok_emb.weight.detach().double()
    assert abs(float(torch.linalg.matrix_norm(emb) - initial["tok_emb.weight"])) > 1e-3


def test_hyperball_step_is_marins_update_and_invariant_to_rescaling_u() -> None:
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(24, 40, generator=gen, dtype=torch.float64)
    u = torch.randn(24, 40, generator=gen, dtype=torch.float64)
    R = torch.linalg.matrix_norm(p)
    expected = marin_update(p, u, 0.03)
    for c in (1e-8, 1.0, 1e6):
        q = p.clone()
        hyperball_step_([q], [c * u], [R], 0.03)
        torch.testing.assert_close(q, expected, rtol=1e-13, atol=1e-15)


def test_angle_identity_for_an_orthogonal_direction() -> None:
    # u orthogonal to W: the step turns W by arctan(lr), so ||dW|| = 2 R sin(arctan(lr) / 2) (OPTIMIZERS.md 4).
    gen = torch.Generator().manual_seed(1)
    W = torch.randn(16, 32, generator=gen, dtype=torch.float64)
    u = torch.randn(16, 32, generator=gen, dtype=torch.float64)
    u = u - (u * W).sum() / (W * W).sum() * W  # remove the component along W
    R = torch.linalg.matrix_norm(W)
    for lr in (0.01, 0.3, 2.0):
        q = W.clone()
        hyperball_step_([q], [u], [R], lr)
        torch.testing.assert_close(
            torch.linalg.matrix_norm(q - W), 2 * R * math.sin(math.atan(lr) / 2), rtol=1e-12, atol=0
        )
        cos = (q * W).sum() / (R * R)
        assert float(cos) == pytest.approx(math.cos(math.atan(lr)), rel=1e-12)


def test_adamh_matches_a_float64_oracle() -> None:
    # AdamH on the matrices and head (Adam direction, Marin's update); plain Adam (no decay) on the rest.
    model = tiny(torch.float64)
    optimizer = build("adamh", model, lr=0.05, adam_lr=0.01, beta1=0.9, beta2=0.95, eps=1e-12, max_grad_norm=0.0)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}
    for t in range(1, 11):
        set_grads(model, t)
        grads = grads_of(model)
        optimizer.step()
        for k, p in params.items():
            m[k] = 0.9 * m[k] + 0.1 * grads[k]
            v2[k] = 0.95 * v2[k] + 0.05 * grads[k] ** 2
            u = (m[k] / (1 - 0.9**t)) / ((v2[k] / (1 - 0.95**t)).sqrt() + 1e-12)
            params[k] = marin_update(p, u, 0.05) if param_role(k) in ("matrix", "head") else p - 0.01 * u
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, params[name], rtol=1e-10, atol=1e-12, msg=named(name))


def test_muonh_matches_a_float64_oracle() -> None:
    # MuonH: Levanter's sum-form Nesterov momentum, NS5 without the shape scale, Marin's update; head AdamH.
    model = tiny(torch.float64)
    hp = {"lr": 0.05, "adam_lr": 0.01, "momentum": 0.9, "beta1": 0.9, "beta2": 0.95, "eps": 1e-12, "muon_eps": 1e-7}
    optimizer = build("muonh", model, max_grad_norm=0.0, **hp)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buf = {k: torch.zeros_like(v) for k, v in params.items()}
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}
    for t in range(1, 11):
        set_grads(model, t)
        grads = grads_of(model)
        optimizer.step()
        for k, p in params.items():
            g = grads[k]
            if param_role(k) == "matrix":
                buf[k] = 0.9 * buf[k] + g
                params[k] = marin_update(p, newton_schulz(g + 0.9 * buf[k], 5, 1e-7), 0.05)
                continue
            m[k] = 0.9 * m[k] + 0.1 * g
            v2[k] = 0.95 * v2[k] + 0.05 * g**2
            u = (m[k] / (1 - 0.9**t)) / ((v2[k] / (1 - 0.95**t)).sqrt() + 1e-12)
            params[k] = marin_update(p, u, 0.05) if param_role(k) == "head" else p - 0.01 * u
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, params[name], rtol=1e-10, atol=1e-12, msg=named(name))


def rules_by_name(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> dict[str, str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["rule"] for g in optimizer.param_groups for p in g["params"]}


def test_routing_on_the_real_model() -> None:
    model = tiny()
    roles = {n: param_role(n) for n, _ in model.named_parameters()}
    adamh = rules_by_name(build("adamh", model), model)
    assert adamh == {n: "adamh" if r in ("matrix", "head") else "adam" for n, r in roles.items()}
    muonh = rules_by_name(build("muonh", model), model)
    expected = {"matrix": "muonh", "head": "adamh", "embedding": "adam", "norm": "adam"}
    assert muonh == {n: expected[r] for n, r in roles.items()}
    for name in NAMES:
        spec = get_spec(name)
        assert "wd" not in spec.hparam_names()  # no weight decay anywhere (PAPER.md section 7)
        assert spec.clips_itself
        for group in build(name, model).param_groups:
            assert group.get("weight_decay", 0.0) == 0.0
            assert group["lr"] == (0.01 if group["rule"] == "adam" else 0.05)


@pytest.mark.parametrize("name", NAMES)
def test_each_sub_chain_is_clipped_by_its_own_norm(name: str) -> None:
    model = tiny(torch.float64)
    optimizer = build(name, model, max_grad_norm=1.0, beta1=0.9)
    set_grads(model, 0, scale={"matrix": 1e4, "head": 300.0, "embedding": 100.0, "norm": 100.0})
    raw = grads_of(model)
    rules = rules_by_name(optimizer, model)
    optimizer.step()
    norms = {r: math.sqrt(sum(float(raw[n].pow(2).sum()) for n in raw if rules[n] == r)) for r in set(rules.values())}
    assert min(norms.values()) > 10  # every sub-chain is clipped
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.equal(p.grad, raw[n])
        clipped = raw[n] / (norms[rules[n]] + 1e-6)
        state = optimizer.state[p]
        # rtol 1e-6: functional.clip_by_global_norm_ takes the norm in float32
        if rules[n] == "muonh":
            torch.testing.assert_close(state["momentum_buffer"], clipped, rtol=1e-6, atol=0)
        else:
            torch.testing.assert_close(state["exp_avg"], 0.1 * clipped, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_keeps_the_radius(name: str) -> None:
    model = tiny()
    optimizer = build(name, model)
    for step in range(4):
        set_grads(model, step)
        optimizer.step()
    saved_model, saved = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    radii = [s["radius"] for s in saved["state"].values() if "radius" in s]
    assert len(radii) == 7 * model.config.n_layers + 1
    for step in range(4, 8):
        set_grads(model, step)
        optimizer.step()

    fresh = tiny(seed=1)
    fresh.load_state_dict(saved_model)
    resumed = build(name, fresh)
    resumed.load_state_dict(saved)
    loaded = [s["radius"] for s in resumed.state_dict()["state"].values() if "radius" in s]
    assert all(torch.equal(a, b) and a.dtype == torch.float32 for a, b in zip(radii, loaded, strict=True))
    for step in range(4, 8):
        set_grads(fresh, step)
        resumed.step()
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)


def test_radius_comes_from_the_state_not_the_current_weights() -> None:
    model = tiny(torch.float64)
    optimizer = build("adamh", model)
    set_grads(model, 0)
    optimizer.step()
    wq = dict(model.named_parameters())["blocks.0.attn.wq.weight"]
    radius = float(optimizer.state[wq]["radius"])
    with torch.no_grad():
        wq.mul_(3.0)  # off the sphere; the next step puts it back at the stored radius
    set_grads(model, 1)
    optimizer.step()
    assert float(torch.linalg.matrix_norm(wq.detach())) == pytest.approx(radius, rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_params_keep_a_float32_radius(name: str) -> None:
    model = tiny(torch.bfloat16)
    optimizer = build(name, model)
    for step in range(3):
        set_grads(model, step)
        optimizer.step()
    for n, p in model.named_parameters():
        if param_role(n) in ("matrix", "head"):
            radius = optimizer.state[p]["radius"]
            assert radius.dtype == torch.float32
            assert float(torch.linalg.matrix_norm(p.detach().float())) == pytest.approx(float(radius), rel=1e-2)
