"""`backend_steps` (Newton-Schulz iterations) is a hyperparameter of Muon, Scion and MuonH with the paper's defaults
(Muon 10, Scion 10, MuonH 5; the evidence is in each optimizer's docstring) and it reaches the iteration."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from workers.model import SCALES, build_model
from workers.optimizers import _newton_schulz, build, get_spec, resolve_hparams

DEFAULTS = {"muon": 10, "scion": 10, "muonh": 5}


@pytest.mark.parametrize(("name", "steps"), DEFAULTS.items())
def test_default_backend_steps(name: str, steps: int) -> None:
    for family in ("paper", "tiny"):
        assert resolve_hparams(get_spec(name), family)["backend_steps"] == steps


def _one_step(name: str, hp: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], torch.Tensor]:
    """Steps every Newton-Schulz loop ran in one optimizer step, and the first hidden matrix afterwards."""
    seen: list[int] = []
    real = _newton_schulz._newton_schulz_wide

    def counting(X: torch.Tensor, steps: int, *args: Any) -> torch.Tensor:
        # Count the loop's Gram products rather than trust the argument: one bmm(X, X^T) per iteration.
        calls = 0
        bmm = torch.bmm

        def counted_bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            nonlocal calls
            calls += 1
            return bmm(a, b)

        monkeypatch.setattr(torch, "bmm", counted_bmm)
        try:
            out = real(X, steps, *args)
        finally:
            monkeypatch.setattr(torch, "bmm", bmm)
        seen.append(calls)
        return out

    monkeypatch.setattr(_newton_schulz, "_newton_schulz_wide", counting)
    torch.manual_seed(0)
    model = build_model(SCALES["tiny-130k"])
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    build(name, model, hp).step()
    return seen, model.get_parameter("blocks.0.attn.wq.weight").detach().clone()


@pytest.mark.parametrize("name", DEFAULTS)
def test_backend_steps_reaches_the_newton_schulz_loop(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    default_seen, default_w = _one_step(name, {}, monkeypatch)
    assert default_seen and set(default_seen) == {DEFAULTS[name]}
    seen, w = _one_step(name, {"backend_steps": 3}, monkeypatch)
    assert seen and set(seen) == {3}
    assert not torch.equal(w, default_w)  # the update changed with the step count


@pytest.mark.parametrize("name", DEFAULTS)
def test_backend_steps_below_one_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="backend_steps must be at least 1, got 0"):
        build(name, build_model(SCALES["tiny-130k"]), {"backend_steps": 0})
