from __future__ import annotations

import io

import pytest
import torch

from workers.model import SCALES, Transformer, build_model, param_role
from workers.optimizers import build, get_spec, resolve_hparams
from workers.optimizers.base import decay_param_groups
from workers.optimizers.mars import MarsAdamW

HP = {"lr": 1e-2, "wd": 0.1, "beta1": 0.9, "beta2": 0.98, "eps": 1e-10, "gamma": 0.05, "max_grad_norm": 1.0}


def _model(dtype: torch.dtype = torch.float64) -> Transformer:
    torch.manual_seed(0)
    return build_model(SCALES["tiny-130k"]).to(dtype)


def _random_grads(model: Transformer, steps: int, seed: int = 1, scale: float = 1.0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {
            n: (scale * torch.randn(p.shape, generator=gen, dtype=torch.float64)).to(p.dtype)
            for n, p in model.named_parameters()
        }
        for _ in range(steps)
    ]


def _run(model: Transformer, opt: torch.optim.Optimizer, grads: list[dict[str, torch.Tensor]]) -> None:
    for step_grads in grads:
        for n, p in model.named_parameters():
            p.grad = step_grads[n].clone()
        opt.step()


def _oracle_mars(
    params: dict[str, torch.Tensor], grads: list[dict[str, torch.Tensor]], hp: dict[str, float]
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Levanter scale_by_mars + add_decayed_weights + scale(-lr) from the rule (OPTIMIZERS.md 3.5), float64.

    The clip is ONE global norm over all parameters' c_t. Also returns the clip scale of every step.
    """
    b1, b2, eps, lr, gamma = hp["beta1"], hp["beta2"], hp["eps"], hp["lr"], hp["gamma"]
    p = dict(params)
    m = {n: torch.zeros_like(x) for n, x in p.items()}
    v = {n: torch.zeros_like(x) for n, x in p.items()}
    prev = {n: torch.zeros_like(x) for n, x in p.items()}  # g_0 = 0, as Levanter's `mog` starts
    scales = []
    for t, g in enumerate(grads, start=1):
        c = {n: g[n] + gamma * b1 / (1 - b1) * (g[n] - prev[n]) for n in p}
        prev = g
        norm = torch.stack([(x * x).sum() for x in c.values()]).sum().sqrt()
        scale = min(1.0, hp["max_grad_norm"] / (norm.item() + 1e-6)) if hp["max_grad_norm"] > 0 else 1.0
        scales.append(scale)
        for n in p:
            wd = hp["wd"] if param_role(n) in ("matrix", "head") else 0.0
            ct = c[n] * scale
            m[n] = b1 * m[n] + (1 - b1) * ct
            v[n] = b2 * v[n] + (1 - b2) * ct * ct
            u = (m[n] / (1 - b1**t)) / ((v[n] / (1 - b2**t)).sqrt() + eps)
            p[n] = p[n] - lr * (u + wd * p[n])
    return p, scales


@pytest.mark.parametrize("grad_scale", [1.0, 1e-4], ids=["clipped", "unclipped"])
def test_mars_matches_the_float64_oracle_over_12_steps(grad_scale: float) -> None:
    model = _model()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = _random_grads(model, 12, scale=grad_scale)
    _run(model, build("mars", model, HP), grads)
    expected, scales = _oracle_mars(start, grads, HP)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n], rtol=1e-10, atol=1e-12, msg=n)
    if grad_scale == 1.0:
        assert max(scales) < 0.01  # the global clip of c_t was active on every step
    else:
        assert min(scales) == 1.0


def test_gamma_zero_equals_torch_adamw() -> None:
    # gamma = 0 gives c_t = g_t; gradients of norm << 1 keep the clip off, so MARS is AdamW (OPTIMIZERS.md 6.2).
    hp = {**HP, "gamma": 0.0}
    ours, theirs = _model(), _model()
    grads = _random_grads(ours, 12, scale=1e-4)
    _run(ours, build("mars", ours, hp), grads)
    adamw = torch.optim.AdamW(
        decay_param_groups(theirs, hp["wd"]),
        lr=hp["lr"],
        betas=(hp["beta1"], hp["beta2"]),
        eps=hp["eps"],
        foreach=False,
    )
    _run(theirs, adamw, grads)
    for (n, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=n)


def test_the_clip_is_global_over_all_parameters_not_per_tensor() -> None:
    # One huge tensor and one small one: a global clip shrinks both by the same factor; a per-tensor clip (the
    # AGI-Arena reference) would leave the small one alone. With gamma = 0 and one step, m = (1-b1) c, v = (1-b2) c^2,
    # so the update is c / (|c| + eps): use exp_avg to read the clipped c back.
    big = torch.zeros(100, dtype=torch.float64, requires_grad=True)
    small = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    b = (HP["beta1"], HP["beta2"])
    opt = MarsAdamW([big, small], lr=HP["lr"], betas=b, eps=HP["eps"], gamma=0.0, max_grad_norm=1.0)
    big.grad = torch.full((100,), 10.0, dtype=torch.float64)  # norm 100
    small.grad = torch.full((3,), 0.1, dtype=torch.float64)
    opt.step()
    total = (100.0**2 + 3 * 0.1**2) ** 0.5
    scale = 1.0 / (total + 1e-6)
    c_small = opt.state[small]["exp_avg"] / (1 - HP["beta1"])
    torch.testing.assert_close(c_small, torch.full((3,), 0.1 * scale, dtype=torch.float64), rtol=1e-12, atol=0)
    # The raw gradient is what is remembered as g_{t-1} (Levanter stores `updates`, not the clipped c).
    assert torch.equal(opt.state[big]["prev_grad"], big.grad)


def test_max_grad_norm_zero_turns_the_clip_off() -> None:
    p = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = MarsAdamW([p], lr=HP["lr"], betas=(HP["beta1"], HP["beta2"]), eps=HP["eps"], gamma=0.0, max_grad_norm=0.0)
    p.grad = torch.full((4,), 100.0, dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(opt.state[p]["exp_avg"], (1 - HP["beta1"]) * p.grad, rtol=1e-12, atol=0)


def _save(model: Transformer, opt: torch.optim.Optimizer) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_dict_round_trip_is_bitwise_and_keeps_the_previous_gradient(dtype: torch.dtype) -> None:
    grads = _random_grads(_model(dtype), 8, scale=1e-3)
    model = _model(dtype)
    opt = build("mars", model, HP)
    _run(model, opt, grads[:4])
    saved = torch.load(_save(model, opt))
    _run(model, opt, grads[4:])

    for key in ("prev_grad", "exp_avg", "exp_avg_sq"):
        assert all(s[key].dtype == torch.float32 for s in saved["opt"]["state"].values()), key
    resumed = _model(dtype)
    resumed.load_state_dict(saved["model"])
    resumed_opt = build("mars", resumed, HP)
    resumed_opt.load_state_dict(saved["opt"])
    _run(resumed, resumed_opt, grads[4:])
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)

    # Negative control: without g_{t-1} the continuation differs, so the round trip above really needed it.
    forgetful = _model(dtype)
    forgetful.load_state_dict(saved["model"])
    forgetful_opt = build("mars", forgetful, HP)
    for state in saved["opt"]["state"].values():
        state["prev_grad"].zero_()
    forgetful_opt.load_state_dict(saved["opt"])
    _run(forgetful, forgetful_opt, grads[4:])
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), forgetful.parameters(), strict=True))


def test_routing_all_parameters_including_1d_and_the_decay_mask() -> None:
    model = _model(torch.float32)
    opt = build("mars", model, {"wd": 0.2})
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert decay_of[id(p)] == (0.2 if param_role(name) in ("matrix", "head") else 0.0), name
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    # Every parameter, the 1-D norms included, gets MARS state (no AdamW fallback for 1-D as in AGI-Arena).
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    assert all(set(opt.state[p]) == {"step", "exp_avg", "exp_avg_sq", "prev_grad"} for p in model.parameters())
    assert any(p.ndim == 1 for p in model.parameters())
    assert get_spec("mars").clips_itself  # the trainer must not clip the raw gradients: the clip is on c_t


def test_paper_space_baseline_is_the_papers_130m_best() -> None:
    hp = resolve_hparams(get_spec("mars"), "paper")
    # shared/data/paper_results.json mars/130m/1; PAPER.md section 3: clip fixed at 1.
    expected = {"lr": 1.6e-2, "wd": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-25, "gamma": 0.025}
    assert {k: hp[k] for k in expected} == expected
    assert (hp["max_grad_norm"], hp["batch_size"], hp["warmup"]) == (1.0, 128, 2000)
    assert "max_grad_norm" in get_spec("mars").spaces["tiny"].fixed
