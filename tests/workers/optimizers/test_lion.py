from __future__ import annotations

import pytest
import torch

from workers.model import SCALES, Transformer, build_model, param_role
from workers.optimizers import build, get_spec, resolve_hparams
from workers.optimizers.lion import Lion

HP = {"lr": 1e-3, "wd": 0.7, "beta1": 0.9, "beta2": 0.95}


def _model(dtype: torch.dtype = torch.float64) -> Transformer:
    torch.manual_seed(0)
    return build_model(SCALES["tiny-130k"]).to(dtype)


def _random_grads(model: Transformer, steps: int, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {n: torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) for n, p in model.named_parameters()}
        for _ in range(steps)
    ]


def _run(model: Transformer, opt: torch.optim.Optimizer, grads: list[dict[str, torch.Tensor]]) -> None:
    for step_grads in grads:
        for n, p in model.named_parameters():
            p.grad = step_grads[n].clone()
        opt.step()


def _oracle_lion(p: torch.Tensor, grads: list[torch.Tensor], lr: float, b1: float, b2: float, wd: float):
    """optax scale_by_lion + add_decayed_weights + scale(-lr) from the rule (OPTIMIZERS.md 3.3), float64."""
    m = torch.zeros_like(p)
    for g in grads:
        u = torch.sign(b1 * m + (1 - b1) * g)
        m = b2 * m + (1 - b2) * g
        p = p - lr * (u + wd * p)
    return p


def test_lion_matches_the_float64_oracle_over_12_steps() -> None:
    model = _model()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = _random_grads(model, 12)
    _run(model, build("lion", model, HP), grads)
    for n, p in model.named_parameters():
        wd = HP["wd"] if param_role(n) in ("matrix", "head") else 0.0
        expected = _oracle_lion(start[n], [g[n] for g in grads], HP["lr"], HP["beta1"], HP["beta2"], wd)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-14)


def test_without_decay_every_coordinate_moves_by_exactly_lr() -> None:
    model = _model()
    opt = build("lion", model, {**HP, "wd": 0.0})
    for step_grads in _random_grads(model, 10):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        for n, p in model.named_parameters():
            p.grad = step_grads[n].clone()
        opt.step()
        for n, p in model.named_parameters():
            moved = (p.detach() - before[n]).abs()
            # |theta| < 1 here, so the float64 subtraction is exact to ~1e-16 (OPTIMIZERS.md 6.2: |d theta| = lr).
            torch.testing.assert_close(moved, torch.full_like(moved, HP["lr"]), rtol=0, atol=1e-15, msg=n)


def test_decay_is_lr_times_wd_not_divided_by_lr() -> None:
    # A zero gradient gives sign(0) = 0, so one step is pure decay: theta (1 - lr wd) (optax add_decayed_weights,
    # then scale(-lr)). lion-pytorch's decoupled_weight_decay=True would give theta (1 - wd) at the initial lr.
    p = torch.full((3,), 2.0, dtype=torch.float64, requires_grad=True)
    opt = Lion([p], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.5)
    p.grad = torch.zeros(3, dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((3,), 2.0 * (1 - 1e-2 * 0.5), dtype=torch.float64))


def test_sign_uses_the_interpolated_momentum_before_updating_it() -> None:
    # b1 0.9, b2 0.5. Step 1: m = 0, so the sign is sign(g1) = +1; then m = 0.5 g1 = 0.5. Step 2 with g2 = -1:
    # b1 m + (1-b1) g2 = 0.45 - 0.1 > 0, so the parameter keeps moving down although g2 < 0. Updating m first
    # (m = 0.5 0.5 - 0.5 = -0.25, then 0.9 (-0.25) - 0.1 < 0) would move it back up.
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = Lion([p], lr=0.1, betas=(0.9, 0.5))
    p.grad = torch.ones(2, dtype=torch.float64)
    opt.step()
    p.grad = -torch.ones(2, dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((2,), -0.2, dtype=torch.float64))
    torch.testing.assert_close(opt.state[p]["exp_avg"], torch.full((2,), -0.25, dtype=torch.float64))


def test_decay_mask_routing_on_the_real_model() -> None:
    model = _model(torch.float32)
    opt = build("lion", model, {"wd": 0.4})
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert decay_of[id(p)] == (0.4 if param_role(name) in ("matrix", "head") else 0.0), name
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert not get_spec("lion").clips_itself  # Levanter clips all gradients before scale_by_lion


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_low_precision_params_keep_float32_state(dtype: torch.dtype) -> None:
    model = _model(dtype)
    opt = build("lion", model, HP)
    _run(model, opt, _random_grads(model, 3))
    for p in model.parameters():
        assert p.dtype == dtype and torch.isfinite(p).all()
        assert set(opt.state[p]) == {"exp_avg"} and opt.state[p]["exp_avg"].dtype == torch.float32


def test_lion_pytorch_agrees() -> None:
    import lion_pytorch  # a dev extra (pyproject.toml): this oracle must run, not skip

    ours, theirs = _model(), _model()
    grads = _random_grads(ours, 12)
    _run(ours, build("lion", ours, {**HP, "wd": 0.0}), grads)
    _run(theirs, lion_pytorch.Lion(theirs.parameters(), lr=HP["lr"], betas=(HP["beta1"], HP["beta2"])), grads)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_paper_space_baseline_is_the_papers_130m_best() -> None:
    hp = resolve_hparams(get_spec("lion"), "paper")
    # shared/data/paper_results.json lion/130m/1.
    expected = {"lr": 2e-3, "wd": 0.7, "beta1": 0.9, "beta2": 0.95, "max_grad_norm": 1.0}
    assert {k: hp[k] for k in expected} == expected
    assert (hp["batch_size"], hp["warmup"]) == (128, 2000)
    # PAPER.md section 3: wd 0.4 .. 1.0 in steps of 0.1, written as exact decimal literals.
    assert get_spec("lion").spaces["paper"].grid["wd"] == tuple(round(0.4 + 0.1 * i, 1) for i in range(7))
