"""Scion (Levanter's paper variant, OPTIMIZERS.md 3.8): float64 oracle, Signum step size, routing, clipping."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from workers.model import SCALES, Transformer, build_model, param_role
from workers.optimizers import get_spec, resolve_hparams
from workers.optimizers.muon import Muon
from workers.optimizers.scion import Scion

HP = {"lr": 0.02, "wd": 0.1, "momentum": 0.9, "beta1": 0.8, "scion_eps": 1e-15, "scion_to_signum_lr": 0.25}


def tiny(dtype: torch.dtype = torch.float64) -> Transformer:
    torch.manual_seed(0)
    return build_model(SCALES["tiny-130k"]).to(dtype)


def build(model: torch.nn.Module, **overrides: float) -> torch.optim.Optimizer:
    spec = get_spec("scion")
    return spec.build(model, resolve_hparams(spec, "tiny", {**HP, **overrides}))


def set_grads(model: torch.nn.Module, step: int, scale: dict[str, float] | None = None) -> None:
    gen = torch.Generator().manual_seed(2000 + step)
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


def oracle_ns(G: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    a, b, c = 3.4445, -4.7750, 2.0315
    if G.shape[0] > G.shape[1]:
        return oracle_ns(G.T, eps, steps).T
    X = G / (torch.linalg.matrix_norm(G) + eps)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X


@pytest.mark.parametrize("max_norm", [0.0, 0.05])  # 0.05 < the Signum part's grad norm: the clip is active
def test_matches_a_float64_oracle_over_ten_steps(max_norm: float) -> None:
    # LV-scion: EMA momentum, NS10 x sqrt(max(1, out/in)), decoupled wd on matrices; Signum (clipped) elsewhere.
    model = tiny()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buf = {k: torch.zeros_like(v) for k, v in params.items()}
    optimizer = build(model, max_grad_norm=max_norm)
    initial = [g["lr"] for g in optimizer.param_groups]
    for t in range(1, 11):
        factor = 1.0 - 0.05 * t
        for group, lr in zip(optimizer.param_groups, initial, strict=True):
            group["lr"] = lr * factor
        set_grads(model, t)
        grads = grads_of(model)
        optimizer.step()
        norm = math.sqrt(sum(float(g.pow(2).sum()) for k, g in grads.items() if param_role(k) != "matrix"))
        clip = min(1.0, max_norm / (norm + 1e-6)) if max_norm > 0 else 1.0
        lr, lr_s = HP["lr"] * factor, HP["lr"] * HP["scion_to_signum_lr"] * factor
        for k, p in params.items():
            if param_role(k) == "matrix":
                buf[k] = HP["momentum"] * buf[k] + (1 - HP["momentum"]) * grads[k]
                scale = math.sqrt(max(1.0, p.shape[0] / p.shape[1]))
                params[k] = p - lr * (scale * oracle_ns(buf[k], HP["scion_eps"], 10) + HP["wd"] * p)
            else:
                buf[k] = HP["beta1"] * buf[k] + (1 - HP["beta1"]) * grads[k] * clip
                wd = HP["wd"] if param_role(k) == "head" else 0.0
                params[k] = p - lr_s * (torch.sign(buf[k]) + wd * p)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, params[name], rtol=1e-10, atol=1e-12, msg=named(name))


def test_signum_part_moves_exactly_lr_times_ratio_per_coordinate() -> None:
    model = tiny()
    optimizer = build(model, wd=0.0, scion_to_signum_lr=0.3)
    for step in range(3):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        set_grads(model, step, scale={"embedding": 1e3, "norm": 1e-3})  # magnitudes must not matter
        optimizer.step()
        for name, p in model.named_parameters():
            if param_role(name) != "matrix":
                moved = (p.detach() - before[name]).abs()
                torch.testing.assert_close(moved, torch.full_like(moved, 0.02 * 0.3), rtol=1e-12, atol=1e-15)


def test_signum_decay_follows_the_mask() -> None:
    model = tiny()
    optimizer = build(model, wd=0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    set_grads(model, 0)
    optimizer.step()
    lr_s = HP["lr"] * HP["scion_to_signum_lr"]
    for name, p in model.named_parameters():
        if param_role(name) == "matrix":
            continue
        wd = 0.5 if param_role(name) == "head" else 0.0  # lm_head decayed; embedding and norms not
        sign = torch.sign(optimizer.state[p]["momentum_buffer"])
        expected = before[name] - lr_s * (sign + wd * before[name])
        torch.testing.assert_close(p.detach(), expected, rtol=1e-14, atol=1e-16)


def test_clip_applies_to_the_signum_part_only() -> None:
    model = tiny()
    optimizer = build(model, max_grad_norm=1.0)
    set_grads(model, 1, scale={"matrix": 1e6, "embedding": 100.0, "head": 100.0, "norm": 100.0})
    raw = grads_of(model)
    optimizer.step()
    signum_norm = math.sqrt(sum(float(g.pow(2).sum()) for n, g in raw.items() if param_role(n) != "matrix"))
    clip = 1.0 / (signum_norm + 1e-6)
    assert clip < 0.1
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.equal(p.grad, raw[name])
        beta = HP["momentum"] if param_role(name) == "matrix" else HP["beta1"]
        expected = (1 - beta) * raw[name] * (1.0 if param_role(name) == "matrix" else clip)
        # rtol 1e-6: functional.clip_by_global_norm_ takes the norm in float32
        torch.testing.assert_close(optimizer.state[p]["momentum_buffer"], expected, rtol=1e-6, atol=0)


def test_routing_on_the_real_model() -> None:
    model = tiny(torch.float32)
    optimizer = build(model)
    names = {id(p): n for n, p in model.named_parameters()}
    by_rule: dict[str, set[str]] = {}
    for group in optimizer.param_groups:
        by_rule.setdefault(group["rule"], set()).update(names[id(p)] for p in group["params"])
        if group["rule"] == "scion":
            assert group["lr"] == HP["lr"] and group["ns_steps"] == 10 and group["ns_eps"] == HP["scion_eps"]
            assert group["weight_decay"] == HP["wd"]
        else:
            assert group["lr"] == pytest.approx(HP["lr"] * HP["scion_to_signum_lr"])
            is_head = {names[id(p)] for p in group["params"]} == {"lm_head.weight"}
            assert group["weight_decay"] == (HP["wd"] if is_head else 0.0)
    assert by_rule["scion"] == {n for n, _ in model.named_parameters() if param_role(n) == "matrix"}
    assert by_rule["signum"] == {n for n, _ in model.named_parameters() if param_role(n) != "matrix"}


def test_with_five_steps_the_matrix_rule_is_muon_without_nesterov() -> None:
    # EMA and sum-form momentum are proportional and NS normalises, so Scion(NS5) = Muon(nesterov=False)
    # up to the NS epsilon (OPTIMIZERS.md 6.2, Scion).
    gen = torch.Generator().manual_seed(3)
    shapes = [(32, 32), (96, 32), (32, 96)]
    a = [torch.nn.Parameter(0.02 * torch.randn(s, generator=gen, dtype=torch.float64)) for s in shapes]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    common = {"lr": 0.02, "weight_decay": 0.1, "momentum": 0.9, "ns_steps": 5, "ns_eps": 1e-30}
    scion = Scion([{"rule": "scion", "params": a, **common}])
    muon = Muon([{"rule": "muon", "params": b, "nesterov": False, **common}])
    for _ in range(6):
        for p, q in zip(a, b, strict=True):
            g = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.grad, q.grad = g.clone(), g.clone()
        scion.step()
        muon.step()
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-11, atol=1e-13)


def test_spec_semantics() -> None:
    spec = get_spec("scion")
    assert spec.clips_itself and spec.schedule == "wsd"
    paper = resolve_hparams(spec, "paper")
    assert paper["warmup"] == 0
    # The paper's tuned 130m 1x config (OPTIMIZERS.md section 1): signum lr 0.0032 = 0.016 x 0.2.
    assert float(paper["lr"]) * float(paper["scion_to_signum_lr"]) == pytest.approx(0.0032)
    assert (paper["momentum"], paper["beta1"], paper["decay"], paper["wd"]) == (0.95, 0.95, 0.8, 0.1)
