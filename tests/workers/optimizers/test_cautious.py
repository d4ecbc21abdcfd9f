from __future__ import annotations

import pytest
import torch

from workers.model import SCALES, Transformer, build_model, param_role
from workers.optimizers import build, get_spec, resolve_hparams
from workers.optimizers.base import decay_param_groups
from workers.optimizers.cautious import CautiousAdamW, cautious_mask_

# eps 1e-3: large enough that its placement (outside the sqrt, and in mean(mask) + eps) shows in the result.
HP = {"lr": 1e-2, "wd": 0.1, "beta1": 0.9, "beta2": 0.98, "eps": 1e-3}


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


def _oracle_cautious(
    p: torch.Tensor, grads: list[torch.Tensor], lr: float, b1: float, b2: float, eps: float, wd: float
) -> tuple[torch.Tensor, list[float]]:
    """Levanter scale_by_cautious + add_decayed_weights + scale(-lr) from the rule (OPTIMIZERS.md 3.4).

    Also returns the mask mean of every step, to check that the mask is neither all ones nor all zeros.
    """
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    means = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        u = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
        mask = (u * g > 0).to(p.dtype)
        means.append(mask.mean().item())
        u = u * mask / (mask.mean() + eps)
        p = p - lr * (u + wd * p)
    return p, means


def test_cautious_matches_the_float64_oracle_over_12_steps() -> None:
    model = _model()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = _random_grads(model, 12)
    _run(model, build("cautious", model, HP), grads)
    all_means = []
    for n, p in model.named_parameters():
        wd = HP["wd"] if param_role(n) in ("matrix", "head") else 0.0
        expected, means = _oracle_cautious(
            start[n], [g[n] for g in grads], HP["lr"], HP["beta1"], HP["beta2"], HP["eps"], wd
        )
        torch.testing.assert_close(p.detach(), expected, rtol=1e-10, atol=1e-12)
        all_means.extend(means[1:])
    # On random gradients the mask really masks (about half the coordinates after step 1), so the test can fail.
    assert min(all_means) > 0.2 and max(all_means) < 0.9


def test_beta1_zero_equals_torch_adamw() -> None:
    # With beta1 = 0, m = g, so u has the sign of g everywhere: the mask is all ones, mean 1, and with a tiny eps
    # the cautious update is AdamW's (OPTIMIZERS.md 6.2).
    hp = {**HP, "beta1": 0.0, "eps": 1e-20}
    ours, theirs = _model(), _model()
    grads = _random_grads(ours, 12)
    _run(ours, build("cautious", ours, hp), grads)
    adamw = torch.optim.AdamW(
        decay_param_groups(theirs, hp["wd"]),
        lr=hp["lr"],
        betas=(0.0, hp["beta2"]),
        eps=hp["eps"],
        foreach=False,
    )
    _run(theirs, adamw, grads)
    for (n, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=n)


def test_mask_rescales_by_one_over_the_mask_mean() -> None:
    update = torch.tensor([[1.0, -2.0], [3.0, -4.0]], dtype=torch.float64)
    grad = torch.tensor([[0.5, 2.0], [-3.0, -1.0]], dtype=torch.float64)  # agrees in signs at (0,0) and (1,1)
    updates = [update.clone()]
    cautious_mask_(updates, [grad], eps=1e-8)
    expected = torch.tensor([[1.0, 0.0], [0.0, -4.0]], dtype=torch.float64) / (0.5 + 1e-8)
    torch.testing.assert_close(updates[0], expected, rtol=0, atol=0)
    # No coordinate agrees: the update is zero (0 / eps), not NaN.
    updates = [update.clone()]
    cautious_mask_(updates, [-update], eps=1e-8)
    assert torch.equal(updates[0], torch.zeros_like(update))


def test_a_hand_made_sign_flip_is_masked_in_a_step() -> None:
    # Step 1 pushes m strongly positive; step 2's gradient flips sign on the first two coordinates, where m (and so
    # u) stays positive: those two are masked and the other two get twice the Adam update (mean(mask) = 1/2).
    p = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    b1, b2, eps, lr = 0.9, 0.98, 1e-20, 0.1
    opt = CautiousAdamW([p], lr=lr, betas=(b1, b2), eps=eps)
    g1 = torch.tensor([10.0, 10.0, 1.0, 1.0], dtype=torch.float64)
    g2 = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64)
    p.grad = g1
    opt.step()
    before = p.detach().clone()
    p.grad = g2
    opt.step()
    m = b1 * (1 - b1) * g1 + (1 - b1) * g2
    v = b2 * (1 - b2) * g1**2 + (1 - b2) * g2**2
    u = (m / (1 - b1**2)) / ((v / (1 - b2**2)).sqrt() + eps)
    assert (u[:2] > 0).all()
    expected_step = -lr * torch.cat([torch.zeros(2, dtype=torch.float64), 2 * u[2:]])
    torch.testing.assert_close(p.detach() - before, expected_step, rtol=1e-12, atol=1e-15)


def test_decay_mask_routing_on_the_real_model() -> None:
    model = _model(torch.float32)
    opt = build("cautious", model, {"wd": 0.2})
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert decay_of[id(p)] == (0.2 if param_role(name) in ("matrix", "head") else 0.0), name
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert not get_spec("cautious").clips_itself


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_low_precision_params_keep_float32_state(dtype: torch.dtype) -> None:
    model = _model(dtype)
    opt = build("cautious", model, HP)
    _run(model, opt, _random_grads(model, 3))
    for p in model.parameters():
        assert p.dtype == dtype and torch.isfinite(p).all()
        assert opt.state[p]["exp_avg"].dtype == torch.float32
        assert opt.state[p]["exp_avg_sq"].dtype == torch.float32


def test_paper_space_baseline_is_the_papers_130m_best() -> None:
    hp = resolve_hparams(get_spec("cautious"), "paper")
    # shared/data/paper_results.json cautious/130m/1.
    expected = {"lr": 8e-3, "wd": 0.1, "beta1": 0.95, "beta2": 0.98, "eps": 1e-15, "max_grad_norm": 1.0}
    assert {k: hp[k] for k in expected} == expected
    assert (hp["batch_size"], hp["warmup"]) == (128, 2000)
    # "as NAdamW" (PAPER.md section 3).
    assert get_spec("cautious").spaces["paper"].grid == get_spec("nadamw").spaces["paper"].grid
