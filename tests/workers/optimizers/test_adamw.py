from __future__ import annotations

import torch

from workers.model import SCALES, build_model, param_role
from workers.optimizers import build, get_spec, resolve_hparams


def _oracle_adamw(p: torch.Tensor, grads: list[torch.Tensor], lr: float, b1: float, b2: float, eps: float, wd: float):
    """AdamW from the update rule (OPTIMIZERS.md 3.1), float64."""
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        u = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
        p = p - lr * (u + wd * p)
    return p


def test_adamw_matches_the_float64_oracle_over_12_steps() -> None:
    torch.manual_seed(0)
    model = build_model(SCALES["tiny-130k"]).double()
    hp = {"lr": 1e-2, "wd": 0.1, "beta1": 0.9, "beta2": 0.98, "eps": 1e-10}
    opt = build("adamw", model, hp)
    names = dict(model.named_parameters())
    start = {n: p.detach().clone() for n, p in names.items()}
    grads: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for _ in range(12):
        for n, p in names.items():
            g = torch.randn_like(p)
            p.grad = g
            grads[n].append(g)
        opt.step()
    for n, p in names.items():
        wd = 0.1 if param_role(n) in ("matrix", "head") else 0.0
        expected = _oracle_adamw(start[n], grads[n], 1e-2, 0.9, 0.98, 1e-10, wd)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-10, atol=1e-12)


def test_decay_mask_routing() -> None:
    model = build_model(SCALES["tiny-130k"])
    opt = build("adamw", model, {"wd": 0.2})
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        expected = 0.2 if param_role(name) in ("matrix", "head") else 0.0  # the head IS decayed (Levanter)
        assert decay_of[id(p)] == expected, name
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_paper_space_baseline_is_the_papers_130m_best() -> None:
    hp = resolve_hparams(get_spec("adamw"), "paper")
    # PAPER.md section 6: lr 8e-3, wd 0.1, beta1 0.9, beta2 0.98, eps 1e-20, clip 1, batch 128, warmup 2000.
    expected = {"lr": 8e-3, "wd": 0.1, "beta1": 0.9, "beta2": 0.98, "eps": 1e-20}
    assert {k: hp[k] for k in expected} == expected
    assert (hp["max_grad_norm"], hp["batch_size"], hp["warmup"]) == (1.0, 128, 2000)


def test_fp32_state_path_matches_the_oracle() -> None:
    # The bf16 path (AdamW32) runs the same rule; check its math in float64 against the oracle.
    from workers.optimizers.adamw import AdamW32

    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.randn(5, 7, dtype=torch.float64))
    start = p.detach().clone()
    opt = AdamW32([{"params": [p], "weight_decay": 0.1}], lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    grads = []
    for _ in range(10):
        g = torch.randn_like(p)
        p.grad = g
        grads.append(g)
        opt.step()
    expected = _oracle_adamw(start, grads, 3e-3, 0.9, 0.95, 1e-8, 0.1)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-10, atol=1e-12)


def test_fp32_state_path_steps_a_group_at_once_and_skips_params_without_gradients() -> None:
    # AdamW32 runs the whole group with _foreach ops: params of different shapes each follow the oracle, a param
    # without a gradient is left alone (no state), and a group with no gradient at all does not raise.
    from workers.optimizers.adamw import AdamW32

    torch.manual_seed(2)
    a = torch.nn.Parameter(torch.randn(5, 7, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    idle = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    alone = torch.nn.Parameter(torch.randn(2, dtype=torch.float64))
    starts = [t.detach().clone() for t in (a, b, idle, alone)]
    opt = AdamW32(
        [{"params": [a, idle, b], "weight_decay": 0.1}, {"params": [alone], "weight_decay": 0.0}],
        lr=3e-3,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    grads: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    for _ in range(5):
        for i, p in enumerate((a, b)):
            g = torch.randn_like(p)
            p.grad = g
            grads[i].append(g)
        opt.step()
    torch.testing.assert_close(a.detach(), _oracle_adamw(starts[0], grads[0], 3e-3, 0.9, 0.95, 1e-8, 0.1))
    torch.testing.assert_close(b.detach(), _oracle_adamw(starts[1], grads[1], 3e-3, 0.9, 0.95, 1e-8, 0.1))
    assert torch.equal(idle.detach(), starts[2]) and idle not in opt.state
    assert torch.equal(alone.detach(), starts[3]) and alone not in opt.state
