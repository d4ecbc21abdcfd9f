"""Muon (Levanter's, OPTIMIZERS.md 1 and 3.7): float64 oracle, torch.optim.Muon parity, routing, clipping, state.

Parity with Levanter's chain composed from optax, and with torch.optim.Muon under optax's float64 Newton-Schulz,
lives in tests/oracles/test_oracle_orthogonal.py.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch

from workers.model import SCALES, Transformer, build_model, param_role
from workers.optimizers import get_spec, resolve_hparams
from workers.optimizers.muon import Muon

# backend_steps pinned to the 5 Newton-Schulz steps the oracle below runs (the spec's default is 10: muon.py docstring).
HP = {
    "lr": 0.02,
    "wd": 0.1,
    "momentum": 0.9,
    "beta1": 0.8,
    "beta2": 0.98,
    "eps": 1e-15,
    "muon_eps": 1e-5,
    "backend_steps": 5,
}


def tiny(dtype: torch.dtype = torch.float32, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return build_model(SCALES["tiny-130k"]).to(dtype)


def build(model: torch.nn.Module, **overrides: float) -> torch.optim.Optimizer:
    spec = get_spec("muon")
    return spec.build(model, resolve_hparams(spec, "tiny", {**HP, **overrides}))


def set_grads(model: torch.nn.Module, step: int, scale: dict[str, float] | None = None) -> None:
    """Synthetic gradients, reproducible per step; `scale` multiplies the grads of a role."""
    gen = torch.Generator().manual_seed(1000 + step)
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


def oracle_ns(G: torch.Tensor, eps: float, steps: int = 5) -> torch.Tensor:
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G / (torch.linalg.matrix_norm(G) + eps)
    if X.shape[0] > X.shape[1]:
        return oracle_ns(G.T, eps, steps).T
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X


def oracle_steps(model: torch.nn.Module, n: int, hp: dict[str, float], max_norm: float) -> dict[str, torch.Tensor]:
    """Levanter's Muon written from OPTIMIZERS.md 3.7 / LV-muon in float64, over n steps with a changing lr."""
    params = {k: v.detach().clone().double() for k, v in model.named_parameters()}
    buf = {k: torch.zeros_like(v) for k, v in params.items()}
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}
    shadow = copy.deepcopy(model).double()
    b1, b2 = hp["beta1"], hp["beta2"]
    for t in range(1, n + 1):
        set_grads(shadow, t)
        grads = grads_of(shadow)
        factor = 1.0 - 0.05 * t  # the trainer rescales every group's lr by the schedule
        lr, adam_lr = hp["lr"] * factor, hp["lr"] * hp["muon_to_adam_lr"] * factor
        adam_keys = [k for k in params if param_role(k) != "matrix"]
        norm = math.sqrt(sum(float(grads[k].pow(2).sum()) for k in adam_keys))
        clip = min(1.0, max_norm / (norm + 1e-6)) if max_norm > 0 else 1.0  # functional.clip_by_global_norm_
        for k, p in params.items():
            g = grads[k]
            if param_role(k) == "matrix":
                buf[k] = hp["momentum"] * buf[k] + g
                u = g + hp["momentum"] * buf[k]
                scale = math.sqrt(max(1.0, p.shape[0] / p.shape[1]))
                params[k] = p - lr * (scale * oracle_ns(u, hp["muon_eps"]) + hp["wd"] * p)
            else:
                g = g * clip
                m[k] = b1 * m[k] + (1 - b1) * g
                v2[k] = b2 * v2[k] + (1 - b2) * g * g
                u = (m[k] / (1 - b1**t)) / ((v2[k] / (1 - b2**t)).sqrt() + hp["eps"])
                wd = hp["wd"] if param_role(k) == "head" else 0.0
                params[k] = p - adam_lr * (u + wd * p)
    return params


@pytest.mark.parametrize("max_norm", [0.0, 0.05])  # 0.05 < the AdamW part's grad norm (~0.4): the clip is active
def test_matches_a_float64_oracle_over_twelve_steps(max_norm: float) -> None:
    model = tiny(torch.float64)
    hp = {**HP, "muon_to_adam_lr": 0.2}
    expected = oracle_steps(model, 12, hp, max_norm)
    optimizer = build(model, max_grad_norm=max_norm, muon_to_adam_lr=0.2)
    initial = [g["lr"] for g in optimizer.param_groups]
    for t in range(1, 13):
        for group, lr in zip(optimizer.param_groups, initial, strict=True):
            group["lr"] = lr * (1.0 - 0.05 * t)
        set_grads(model, t)
        optimizer.step()
    # functional.clip_by_global_norm_ takes the norm in float32 even for float64 grads, so with the clip active
    # the AdamW part agrees to ~1e-8 relative (moves are ~5e-2 over 12 steps); without it, to rounding.
    atol = 1e-8 if max_norm > 0 else 1e-12
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, expected[name], rtol=1e-10, atol=atol, msg=named(name))


def matrices(seed: int = 0, dtype: torch.dtype = torch.float32) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(32, 32), (128, 32), (32, 128), (48, 80)]
    return [torch.nn.Parameter(0.02 * torch.randn(s, generator=gen).to(dtype)) for s in shapes]


def run_pair(ours: list[torch.nn.Parameter], theirs: list[torch.nn.Parameter], steps: int, eps: float) -> None:
    """Our Muon (matrix rule alone) and torch.optim.Muon with matching settings, same grads."""
    opt_ours = Muon(
        [
            {
                "rule": "muon",
                "params": ours,
                "lr": 0.02,
                "weight_decay": 0.1,
                "momentum": 0.95,
                "nesterov": True,
                "ns_steps": 5,
                "ns_eps": eps,
            }
        ]
    )
    # adjust_lr_fn="original" = sqrt(max(1, out/in)); torch decays with the unadjusted lr, as Levanter.
    opt_torch = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1, momentum=0.95, eps=eps, adjust_lr_fn="original")
    gen = torch.Generator().manual_seed(7)
    for _ in range(steps):
        for a, b in zip(ours, theirs, strict=True):
            g = torch.randn(a.shape, generator=gen).to(a.dtype)
            a.grad, b.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_torch.step()


def test_parity_with_torch_muon_within_bf16_tolerance() -> None:
    # torch.optim.Muon runs NS in bfloat16 (OPTIMIZERS.md section 2); ours in float32 on CPU.
    ours, theirs, start = matrices(), matrices(), matrices()
    run_pair(ours, theirs, steps=10, eps=1e-7)
    for a, b, s in zip(ours, theirs, start, strict=True):
        moved_ours, moved_torch = a.detach() - s.detach(), b.detach() - s.detach()
        rel = torch.linalg.matrix_norm(moved_ours - moved_torch) / torch.linalg.matrix_norm(moved_torch)
        assert rel < 2e-2, (tuple(a.shape), float(rel))
        assert rel > 0  # the two really differ (bf16 vs fp32): the comparison is not vacuous


def test_routing_on_the_real_model() -> None:
    model = tiny()
    optimizer = build(model, muon_to_adam_lr=0.3)
    names = {id(p): n for n, p in model.named_parameters()}
    by_rule: dict[str, set[str]] = {}
    decay: dict[str, float] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            by_rule.setdefault(group["rule"], set()).add(names[id(p)])
            decay[names[id(p)]] = group["weight_decay"]
            expected_lr = HP["lr"] if group["rule"] == "muon" else HP["lr"] * 0.3
            assert group["lr"] == pytest.approx(expected_lr)
    assert set(by_rule) == {"muon", "adamw"}
    assert by_rule["muon"] == {n for n, _ in model.named_parameters() if param_role(n) == "matrix"}
    assert len(by_rule["muon"]) == 7 * model.config.n_layers  # wq wk wv wo w1 w2 w3 per block
    assert {"tok_emb.weight", "lm_head.weight", "norm_f.weight", "blocks.0.attn_norm.weight"} <= by_rule["adamw"]
    # Levanter's decay mask on both parts: matrices and lm_head decayed; embedding and norms not.
    assert {n for n, wd in decay.items() if wd > 0} == by_rule["muon"] | {"lm_head.weight"}
    adam_groups = [g for g in optimizer.param_groups if g["rule"] == "adamw"]
    assert all(g["betas"] == (HP["beta1"], HP["beta2"]) and g["eps"] == HP["eps"] for g in adam_groups)
    muon_group = next(g for g in optimizer.param_groups if g["rule"] == "muon")
    assert (muon_group["ns_steps"], muon_group["ns_eps"], muon_group["nesterov"]) == (5, HP["muon_eps"], True)


def test_clip_applies_to_the_adamw_part_only() -> None:
    # Huge matrix grads must neither be clipped nor enter the AdamW part's norm (LV-muon: clip in adamw_transform).
    model = tiny(torch.float64)
    optimizer = build(model, max_grad_norm=1.0)
    set_grads(model, 1, scale={"matrix": 1e6, "embedding": 100.0, "head": 100.0, "norm": 100.0})
    raw = grads_of(model)
    optimizer.step()
    adam_norm = math.sqrt(sum(float(g.pow(2).sum()) for n, g in raw.items() if param_role(n) != "matrix"))
    assert adam_norm > 10  # the clip is active
    clip = 1.0 / (adam_norm + 1e-6)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.equal(p.grad, raw[name]), "step() must not modify p.grad"
        state = optimizer.state[p]
        if param_role(name) == "matrix":
            torch.testing.assert_close(state["momentum_buffer"], raw[name], rtol=0, atol=0)
        else:
            # rtol 1e-6: functional.clip_by_global_norm_ takes the norm in float32
            torch.testing.assert_close(state["exp_avg"], (1 - HP["beta1"]) * clip * raw[name], rtol=1e-6, atol=0)


def test_matrix_update_ignores_the_clip_and_adamw_part_feels_it() -> None:
    # Two steps with a large then small gradient: Adam's second step depends on the clip scale; Muon's does not.
    results = {}
    for max_norm in (0.0, 1.0):
        model = tiny(torch.float64)
        optimizer = build(model, max_grad_norm=max_norm)
        for step, scale in ((1, 1e4), (2, 1.0)):
            set_grads(model, step, scale={r: scale for r in ("matrix", "embedding", "head", "norm")})
            optimizer.step()
        results[max_norm] = dict(model.named_parameters())
    for name, p in results[0.0].items():
        q = results[1.0][name]
        if param_role(name) == "matrix":
            assert torch.equal(p, q), name
        else:
            assert not torch.allclose(p, q, rtol=1e-6, atol=0), name


def test_spec_semantics() -> None:
    spec = get_spec("muon")
    assert spec.clips_itself and spec.schedule == "wsd"
    for family in ("paper", "tiny"):
        hp = resolve_hparams(spec, family)
        assert hp["warmup"] == 0 and hp["min_lr_ratio"] == 0.0
    # The paper's tuned 130m 1x config (OPTIMIZERS.md section 1): adam lr 0.0032 = 0.016 x 0.2.
    paper = resolve_hparams(spec, "paper")
    assert float(paper["lr"]) * float(paper["muon_to_adam_lr"]) == pytest.approx(0.0032)
    assert (paper["momentum"], paper["beta1"], paper["beta2"], paper["eps"]) == (0.95, 0.8, 0.98, 1e-15)
    assert (paper["muon_eps"], paper["wd"], paper["decay"], paper["max_grad_norm"]) == (1e-5, 0.1, 0.8, 1.0)


def test_bf16_state_survives_the_round_trip_as_float32() -> None:
    # torch's load_state_dict casts state to the param dtype; RuleOptimizer keeps the saved float32.
    model = tiny(torch.bfloat16)
    optimizer = build(model)
    for step in range(3):
        set_grads(model, step)
        optimizer.step()
    saved = copy.deepcopy(optimizer.state_dict())
    reference = copy.deepcopy(model)
    set_grads(model, 3)
    optimizer.step()

    resumed = build(reference)
    resumed.load_state_dict(saved)
    for state in resumed.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                assert value.dtype == torch.float32
    set_grads(reference, 3)
    resumed.step()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


def test_grad_none_params_are_skipped() -> None:
    model = tiny()
    optimizer = build(model)
    set_grads(model, 0)
    params = dict(model.named_parameters())
    skipped = [params["tok_emb.weight"], params["blocks.0.attn.wq.weight"]]
    for p in skipped:
        p.grad = None
    before = [p.detach().clone() for p in skipped]
    optimizer.step()
    for p, b in zip(skipped, before, strict=True):
        assert torch.equal(p, b)
        assert p not in optimizer.state


def test_unknown_rule_is_rejected_and_the_optimizer_deep_copies() -> None:
    p = torch.nn.Parameter(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="no update rule"):
        Muon([{"rule": "sgd", "params": [p], "lr": 0.1}])
    model = tiny()
    optimizer = build(model)
    set_grads(model, 0)
    optimizer.step()
    clone = copy.deepcopy(optimizer)
    assert clone.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
