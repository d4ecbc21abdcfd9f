"""The fused-kernel paths of the elementwise optimizers (workers/optimizers/functional.py: torch._fused_adamw_ with
the Nesterov fold and the lr = -1, wd = -1 buffer trick, torch._fused_sgd_) against their _foreach paths.

The optax oracles (tests/oracles) run in float64 and so check the fused paths there; this checks float32, the
dtype the trainer runs on CPU, and that the fused kernels are really taken (a test that can fail if a dtype or
layout check sends every step down the _foreach path)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from workers.model import SCALES, build_model
from workers.optimizers import build, functional, get_spec, resolve_hparams

OPTIMIZERS = ("nadamw", "cautious", "mars", "adamh", "muonh", "adam_mini", "muon")


def _train(name: str, steps: int = 8) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(SCALES["tiny-130k"])
    hp = resolve_hparams(get_spec(name), "tiny", {})
    opt = build(name, model, hp)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen) * 0.05
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fused_paths_match_the_foreach_paths_in_float32(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEP_CPU_KERNELS", "0")  # the torch-op paths (test_cpu_kernels checks the kernels)
    calls = {"fused": 0}
    real = torch._fused_adamw_

    def counting(*args: Any, **kwargs: Any) -> None:
        calls["fused"] += 1
        real(*args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adamw_", counting)
    fused = _train(name)
    assert calls["fused"] > 0, "the fused Adam kernel was never called"
    monkeypatch.setattr(functional, "fused_ok", lambda *lists: False)
    calls["fused"] = 0
    plain = _train(name)
    assert calls["fused"] == 0
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=1e-6)


def test_nesterov_fold_matches_adam_directions_at_every_step() -> None:
    # fused_adam_(nesterov=True) against adam_directions(nesterov=True) + apply_updates_ in float64, steps 1..30,
    # with beta1 values of the paper's grid (the fold's beta1' and step size change with t).
    gen = torch.Generator().manual_seed(2)
    for beta1 in (0.8, 0.95, 0.98):
        p_a = torch.randn(64, 32, generator=gen, dtype=torch.float64)
        p_b = p_a.clone()
        m_a, v_a = torch.zeros_like(p_a), torch.zeros_like(p_a)
        m_b, v_b = m_a.clone(), v_a.clone()
        for t in range(1, 31):
            g = torch.randn(p_a.shape, generator=gen, dtype=torch.float64)
            functional.fused_adam_(
                [p_a], [g], [m_a], [v_a], [t], lr=0.01, beta1=beta1, beta2=0.98, eps=1e-10, weight_decay=0.1,
                nesterov=True,
            )  # fmt: skip
            u = functional.adam_directions([m_b], [v_b], [g], [t], beta1, 0.98, 1e-10, nesterov=True)
            p_b.mul_(1 - 0.01 * 0.1).add_(u[0], alpha=-0.01)
            torch.testing.assert_close(m_a, m_b, rtol=1e-12, atol=1e-15)
            torch.testing.assert_close(p_a, p_b, rtol=1e-12, atol=1e-15)
