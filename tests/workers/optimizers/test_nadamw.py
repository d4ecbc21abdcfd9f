from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import torch

from workers.model import SCALES, Transformer, build_model, param_role
from workers.optimizers import build, get_spec, resolve_hparams
from workers.optimizers.base import decay_param_groups

HP = {"lr": 1e-2, "wd": 0.1, "beta1": 0.9, "beta2": 0.98, "eps": 1e-10}


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


def _oracle_nadamw(p: torch.Tensor, grads: list[torch.Tensor], lr: float, b1: float, b2: float, eps: float, wd: float):
    """optax scale_by_adam(nesterov=True) + add_decayed_weights + scale(-lr), from the rule (OPTIMIZERS.md 3.2)."""
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
        u = m_hat / ((v / (1 - b2**t)).sqrt() + eps)
        p = p - lr * (u + wd * p)
    return p


@pytest.fixture
def float64_default() -> Iterator[None]:
    """torch.optim.NAdam keeps mu_product in the default dtype; float32 there costs ~1e-8 relative error."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_nadamw_matches_the_float64_oracle_over_12_steps() -> None:
    model = _model()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = _random_grads(model, 12)
    _run(model, build("nadamw", model, HP), grads)
    for n, p in model.named_parameters():
        wd = HP["wd"] if param_role(n) in ("matrix", "head") else 0.0
        expected = _oracle_nadamw(start[n], [g[n] for g in grads], HP["lr"], HP["beta1"], HP["beta2"], HP["eps"], wd)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-10, atol=1e-12)


def _torch_nadam(model: Transformer, momentum_decay: float) -> torch.optim.NAdam:
    return torch.optim.NAdam(
        decay_param_groups(model, HP["wd"]),
        lr=HP["lr"],
        betas=(HP["beta1"], HP["beta2"]),
        eps=HP["eps"],
        momentum_decay=momentum_decay,
        decoupled_weight_decay=True,
        foreach=False,
    )


@pytest.mark.usefixtures("float64_default")
def test_nadamw_equals_torch_nadam_without_its_momentum_schedule() -> None:
    # OPTIMIZERS.md 3.2: psi = 1e9 makes 0.96^(t psi) underflow to 0, so torch's mu_t = beta1 and its update is
    # optax's nesterov Adam (checked numerically: 1.8e-15 apart in float64 over 12 steps).
    ours, theirs, dozat = _model(), _model(), _model()
    grads = _random_grads(ours, 12)
    _run(ours, build("nadamw", ours, HP), grads)
    _run(theirs, _torch_nadam(theirs, momentum_decay=1e9), grads)
    _run(dozat, _torch_nadam(dozat, momentum_decay=4e-3), grads)
    for (n, p), q, d in zip(ours.named_parameters(), theirs.parameters(), dozat.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=n)
        # torch's default schedule (psi = 4e-3) is not the paper's NAdamW: it moves every tensor differently.
        assert (p - d).abs().max() > 1e-4, n


def test_decay_mask_routing_on_the_real_model() -> None:
    model = _model(torch.float32)
    opt = build("nadamw", model, {"wd": 0.2})
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        # Levanter's mask: matrices and lm_head decayed, embedding and norms not (OPTIMIZERS.md section 1).
        assert decay_of[id(p)] == (0.2 if param_role(name) in ("matrix", "head") else 0.0), name
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert not get_spec("nadamw").clips_itself  # the trainer clips all gradients first, as Levanter's chain


def test_bf16_params_keep_float32_state_through_a_state_dict_round_trip() -> None:
    model = _model(torch.bfloat16)
    opt = build("nadamw", model, HP)
    grads = _random_grads(model, 4)
    _run(model, opt, grads[:2])
    for p in model.parameters():
        assert p.dtype == torch.bfloat16
        assert opt.state[p]["exp_avg"].dtype == torch.float32
        assert opt.state[p]["exp_avg_sq"].dtype == torch.float32
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    _run(model, opt, grads[2:])

    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = _model(torch.bfloat16)
    resumed.load_state_dict(saved["model"])
    resumed_opt = build("nadamw", resumed, HP)
    resumed_opt.load_state_dict(saved["opt"])
    for p in resumed.parameters():
        assert resumed_opt.state[p]["exp_avg_sq"].dtype == torch.float32  # torch's loader would cast it to bf16
    _run(resumed, resumed_opt, grads[2:])
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_paper_space_baseline_is_the_papers_130m_best() -> None:
    hp = resolve_hparams(get_spec("nadamw"), "paper")
    # shared/data/paper_results.json nadamw/130m/1.
    expected = {"lr": 8e-3, "wd": 0.1, "beta1": 0.95, "beta2": 0.98, "eps": 1e-25, "max_grad_norm": 1.0}
    assert {k: hp[k] for k in expected} == expected
    assert (hp["batch_size"], hp["warmup"]) == (128, 2000)
    tiny = get_spec("nadamw").spaces["tiny"]
    assert {k: len(v) for k, v in tiny.grid.items()} == {
        k: len(v) for k, v in get_spec("nadamw").spaces["paper"].grid.items()
    }
