from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from workers.model import SCALES, RMSNorm, Transformer, build_model, param_role
from workers.optimizers import HessianOptimizer, build, get_spec, resolve_hparams
from workers.optimizers.sophia import HUTCHINSON_SEED, SophiaH

CONFIG = SCALES["tiny-130k"]


def _batch(seed: int, batch: int = 2, tokens: int = 33) -> torch.Tensor:
    return torch.randint(0, CONFIG.vocab_size, (batch, tokens), generator=torch.Generator().manual_seed(seed))


def _train_step(model: Transformer, opt: SophiaH, seed: int) -> None:
    """One step as the trainer runs it: an HVP (MATH attention, create_graph) when due, then step()."""
    idx = _batch(seed)
    model.zero_grad(set_to_none=True)
    if opt.hessian_due():
        params = opt.hessian_params()
        with sdpa_kernel(SDPBackend.MATH):
            loss = model(idx[:, :-1], idx[:, 1:])
            grads = torch.autograd.grad(loss, params, create_graph=True)
            opt.update_hessian(list(grads))
        for p, g in zip(params, grads, strict=True):
            p.grad = g.detach()
    else:
        model(idx[:, :-1], idx[:, 1:]).backward()
    opt.step()


def _hessian_update(opt: SophiaH, loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor]) -> None:
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    opt.update_hessian(list(grads))


# --- the Hutchinson estimate ------------------------------------------------------------------------------


def test_hutchinson_estimate_converges_to_the_known_diagonal() -> None:
    # f(x) = sum(a_i x_i^2): diag H = 2a (Levanter tests/test_sophia.py uses the same known-Hessian idea).
    torch.manual_seed(0)
    a = torch.rand(2000, dtype=torch.float64) * 3 + 0.5
    x = torch.randn(2000, dtype=torch.float64, requires_grad=True)
    opt = SophiaH([x], lr=0.0, beta1=0.9, beta2=0.99, gamma=0.01, eps=1e-12)
    for _ in range(1500):  # 1 - 0.99^1500 = 1 - 3e-7: the EMA has forgotten its zero start
        _hessian_update(opt, lambda: (a * x * x).sum(), [x])
    ratio = opt.state[x]["hessian"] / (2 * a)
    # Per coordinate the EMA of z^2 has std sqrt(2 (1-b2)/(1+b2)) = 0.1; the mean over 2000 is within 0.01.
    assert abs(float(ratio.mean()) - 1) < 0.02
    assert float((ratio - 1).abs().quantile(0.95)) < 0.3
    assert opt.hessian_updates == 1500


def test_hutchinson_estimate_of_a_dense_hessian_is_its_diagonal() -> None:
    # f(x) = x^T A x / 2 with a dense SPD A: E[z * Az] = diag(A), the off-diagonal terms cancel in mean.
    torch.manual_seed(1)
    n = 30
    q = torch.randn(n, n, dtype=torch.float64) / n**0.5
    A = q @ q.T + torch.diag(torch.rand(n, dtype=torch.float64) + 1.0)
    x = torch.randn(n, dtype=torch.float64, requires_grad=True)
    opt = SophiaH([x], lr=0.0, beta1=0.9, beta2=0.998, gamma=0.01, eps=1e-12)
    for _ in range(4000):  # 1 - 0.998^4000 = 1 - 3e-4
        _hessian_update(opt, lambda: 0.5 * x @ A @ x, [x])
    torch.testing.assert_close(opt.state[x]["hessian"], torch.diagonal(A), rtol=0.15, atol=0.0)


# --- invariants -------------------------------------------------------------------------------------------


def test_zero_hessian_gives_lr_times_sign_of_m() -> None:
    torch.manual_seed(2)
    x = torch.randn(500, dtype=torch.float64, requires_grad=True)
    lr = 0.01
    opt = SophiaH([x], lr=lr, beta1=0.9, beta2=0.99, gamma=0.0125, eps=1e-7, weight_decay=0.0)
    m = torch.zeros_like(x)
    for _ in range(4):  # no update_hessian: h stays 0, so every coordinate is clipped
        g = torch.randn_like(x)
        m = 0.9 * m + 0.1 * g
        before = x.detach().clone()
        x.grad = g
        opt.step()
        torch.testing.assert_close(x.detach() - before, -lr * torch.sign(m), rtol=0, atol=1e-15)


def test_each_coordinate_moves_at_most_lr() -> None:
    torch.manual_seed(3)
    a = torch.rand(400, dtype=torch.float64) * 2 - 0.5  # some negative curvature too
    x = torch.randn(400, dtype=torch.float64) * 0.05
    x.requires_grad_(True)
    lr = 0.02
    opt = SophiaH([x], lr=lr, beta1=0.9, beta2=0.9, gamma=1.0, eps=1e-7, update_interval=2)
    unclipped = 0
    for _ in range(20):
        if opt.hessian_due():
            _hessian_update(opt, lambda: (a * x * x).sum(), [x])
        x.grad = torch.autograd.grad((a * x * x).sum(), x)[0]
        before = x.detach().clone()
        opt.step()
        delta = (x.detach() - before).abs()
        assert float(delta.max()) <= lr * (1 + 1e-12)
        unclipped += int((delta < lr * (1 - 1e-9)).sum())
    assert unclipped > 0  # the curvature does scale some coordinates below the clip


def test_hessian_schedule_is_levanters_every_kth_step() -> None:
    x = torch.zeros(3, requires_grad=True)
    opt = SophiaH([x], lr=0.1, beta1=0.9, beta2=0.99, gamma=0.01, eps=1e-12)
    due = []
    for _ in range(25):
        due.append(opt.hessian_due())
        x.grad = torch.ones(3)
        opt.step()
    assert [i + 1 for i, d in enumerate(due) if d] == [10, 20]
    assert isinstance(opt, HessianOptimizer)


# --- the float64 oracle -----------------------------------------------------------------------------------

SHAPES = {"matrix": (64, 64), "embedding": (256, 64), "norm": (64,)}  # tiny-130k shapes


def _objective(
    xs: dict[str, torch.Tensor], c: dict[str, torch.Tensor], d: dict[str, torch.Tensor], kappa: float
) -> torch.Tensor:
    """f = sum_i (c_i x_i^2 / 2 + d_i x_i^4 / 4) + kappa (sum of all x)^2 / 2: a non-constant, non-diagonal H."""
    total = torch.zeros((), dtype=torch.float64)
    coupling = torch.zeros((), dtype=torch.float64)
    for k, x in xs.items():
        total = total + (c[k] * x**2 / 2 + d[k] * x**4 / 4).sum()
        coupling = coupling + x.sum()
    return total + kappa * coupling**2 / 2


def test_matches_the_float64_oracle_over_14_steps() -> None:
    torch.manual_seed(4)
    c = {k: torch.randn(s, dtype=torch.float64) for k, s in SHAPES.items()}  # indefinite
    d = {k: torch.rand(s, dtype=torch.float64) for k, s in SHAPES.items()}
    kappa = 1e-4
    start = {k: torch.randn(s, dtype=torch.float64) * 0.1 for k, s in SHAPES.items()}
    xs = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    lr, b1, b2, gamma, eps, wd, k_interval = 0.01, 0.9, 0.95, 0.05, 1e-7, 0.1, 3
    groups: list[dict[str, Any]] = [
        {"params": [xs["matrix"]], "weight_decay": wd},
        {"params": [xs["embedding"], xs["norm"]]},
    ]
    opt = SophiaH(groups, lr=lr, beta1=b1, beta2=b2, gamma=gamma, eps=eps, update_interval=k_interval)

    # The oracle: plain tensors, analytic gradient and Hessian-vector product, its own generator.
    ox = {k: v.clone() for k, v in start.items()}
    om = {k: torch.zeros_like(v) for k, v in start.items()}
    oh = {k: torch.zeros_like(v) for k, v in start.items()}
    gen = torch.Generator().manual_seed(HUTCHINSON_SEED)
    decay = {"matrix": wd, "embedding": 0.0, "norm": 0.0}
    for t in range(1, 15):
        step_lr = lr * (0.5 + t / 14)  # the trainer rescales group["lr"] each step
        for group in opt.param_groups:
            group["lr"] = step_lr
        # the optimizer, driven as the trainer drives it
        loss = _objective(xs, c, d, kappa)
        if opt.hessian_due():
            grads = torch.autograd.grad(loss, list(xs.values()), create_graph=True)
            opt.update_hessian(list(grads))
        else:
            grads = torch.autograd.grad(loss, list(xs.values()))
        for x, g in zip(xs.values(), grads, strict=True):
            x.grad = g.detach()
        opt.step()
        # the oracle
        coupling = sum(float(v.sum()) for v in ox.values())
        og = {k: c[k] * v + d[k] * v**3 + kappa * coupling for k, v in ox.items()}
        # Levanter's order: the update from the old h, then on steps k, 2k, ... h takes the HVP at the
        # pre-update point (the point the gradient was taken at).
        new_x = {}
        for k, v in ox.items():
            om[k] = b1 * om[k] + (1 - b1) * og[k]
            u = ((om[k] / (1 - b1**t)) / torch.clamp(gamma * oh[k], min=eps)).clamp(-1, 1)
            new_x[k] = v - step_lr * (u + decay[k] * v)
        if t % k_interval == 0:
            z = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in ox.items()}
            z_sum = sum(float(v.sum()) for v in z.values())
            for k, v in ox.items():
                hz = (c[k] + 3 * d[k] * v**2) * z[k] + kappa * z_sum
                oh[k] = b2 * oh[k] + (1 - b2) * z[k] * hz
        ox = new_x
    assert opt.hessian_updates == 4  # steps 3, 6, 9, 12
    for k, x in xs.items():
        torch.testing.assert_close(opt.state[x]["hessian"], oh[k], rtol=1e-10, atol=1e-13, msg=k)
        torch.testing.assert_close(x.detach(), ox[k], rtol=1e-10, atol=1e-13, msg=k)


# --- the real model -----------------------------------------------------------------------------------------


def _rmsnorm_float64(self: RMSNorm, x: torch.Tensor) -> torch.Tensor:
    # RMSNorm.forward without its float32 cast, so that a float64 model is float64 throughout
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def test_hvp_on_the_real_model_under_the_math_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RMSNorm, "forward", _rmsnorm_float64)
    torch.manual_seed(5)
    model = build_model(CONFIG).double()
    opt = build("sophia", model, {"beta2": 0.9})
    assert isinstance(opt, SophiaH)
    params = opt.hessian_params()
    assert len(params) == len(list(model.parameters()))
    idx = _batch(0)
    rng_before = opt.generator.get_state()

    def loss_at() -> torch.Tensor:
        logits = model(idx[:, :-1])  # (B, T, V) float64 (the model's own loss casts to float32)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), idx[:, 1:].reshape(-1))

    with sdpa_kernel(SDPBackend.MATH):
        grads = torch.autograd.grad(loss_at(), params, create_graph=True)
        opt.update_hessian(list(grads))
    estimate = [opt.state[p]["hessian"] / (1 - 0.9) for p in params]  # the first EMA step from h = 0

    # Check z * Hz against central differences of the gradient along the same probes z.
    gen = torch.Generator().set_state(rng_before)
    zs = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
    step = 1e-6

    def grad_at(sign: float) -> list[torch.Tensor]:
        with torch.no_grad():
            for p, z in zip(params, zs, strict=True):
                p.add_(z, alpha=sign * step)
        g = torch.autograd.grad(loss_at(), params)
        with torch.no_grad():
            for p, z in zip(params, zs, strict=True):
                p.sub_(z, alpha=sign * step)
        return list(g)

    plus, minus = grad_at(1.0), grad_at(-1.0)
    expected = torch.cat([(z * (gp - gm) / (2 * step)).flatten() for z, gp, gm in zip(zs, plus, minus, strict=True)])
    got = torch.cat([e.flatten() for e in estimate])
    assert float((got - expected).norm() / expected.norm()) < 1e-6
    assert all(bool(e.abs().sum() > 0) for e in estimate)


def test_state_dict_round_trip_is_bitwise() -> None:
    torch.manual_seed(6)
    model = build_model(CONFIG)
    hp = {"update_interval": 3, "wd": 0.1}
    opt = build("sophia", model, hp)
    assert isinstance(opt, SophiaH)
    for step in range(4):  # an HVP at step 3: the generator has moved
        _train_step(model, opt, step)
    assert opt.hessian_updates == 1
    assert not any("hessian_before" in state for state in opt.state.values())  # step() dropped the stash
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    for step in range(4, 8):  # an HVP at step 6
        _train_step(model, opt, step)

    resumed = build_model(CONFIG)
    resumed.load_state_dict(saved_model)
    resumed_opt = build("sophia", resumed, hp)
    assert isinstance(resumed_opt, SophiaH)
    resumed_opt.load_state_dict(saved_opt)
    assert (resumed_opt.steps_done, resumed_opt.hessian_updates) == (4, 1)
    for step in range(4, 8):
        _train_step(resumed, resumed_opt, step)
    for (name, p), q in zip(model.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert torch.equal(opt.generator.get_state(), resumed_opt.generator.get_state())
    assert (opt.steps_done, opt.hessian_updates) == (resumed_opt.steps_done, resumed_opt.hessian_updates) == (8, 2)


def test_bf16_params_keep_fp32_state() -> None:
    model = build_model(CONFIG).to(torch.bfloat16)
    opt = build("sophia", model, {"update_interval": 1})  # an HVP on the first step
    assert isinstance(opt, SophiaH)
    _train_step(model, opt, 0)
    resumed_opt = build("sophia", model, {"update_interval": 1})
    resumed_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    for p in model.parameters():
        assert torch.isfinite(p).all()
        for key in ("exp_avg", "hessian"):
            assert opt.state[p][key].dtype == torch.float32
            assert resumed_opt.state[p][key].dtype == torch.float32
        assert bool(opt.state[p]["hessian"].abs().sum() > 0)


# --- spec ---------------------------------------------------------------------------------------------------


def test_decay_mask_and_spec() -> None:
    model = build_model(CONFIG)
    opt = build("sophia", model, {"wd": 0.2})
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert decay_of[id(p)] == (0.2 if param_role(name) in ("matrix", "head") else 0.0), name
    assert not get_spec("sophia").clips_itself  # the trainer clips at max_grad_norm (1 in every paper cell)


@pytest.mark.parametrize("family", ["paper", "tiny"])
def test_spaces(family: str) -> None:
    spec = get_spec("sophia")
    hp = resolve_hparams(spec, family)
    assert (hp["max_grad_norm"], hp["update_interval"]) == (1.0, 10)
    assert set(spec.spaces[family].grid) == set(spec.spaces["paper"].grid)
    assert all(len(v) == len(spec.spaces["paper"].grid[k]) for k, v in spec.spaces[family].grid.items())
    if family == "paper":
        # OPTIMIZERS.md 1 / paper_results.json, 130m 1x: lr 4e-3, betas 0.95/0.9, gamma 0.0125, eps 1e-7,
        # warmup 4000, wd 0, batch 128.
        expected = {"lr": 4e-3, "beta1": 0.95, "beta2": 0.9, "gamma": 0.0125, "eps": 1e-7, "warmup": 4000}
        assert {k: hp[k] for k in expected} == expected
        assert (hp["wd"], hp["batch_size"]) == (0.0, 128)
