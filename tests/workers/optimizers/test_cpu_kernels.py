"""The one-pass CPU kernels (workers/optimizers/_cpu_kernels.cpp) against the torch-op paths they replace.

The torch-op paths are the reference: the optax oracles (tests/oracles, float64, which the kernels never take)
and test_fused_paths check them. Here the same float32 training steps run both ways, with the global-norm clips
active, and the kernels must really be taken (a test that fails if they silently fall back)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import torch

from workers.model import SCALES, build_model
from workers.optimizers import _cpu_kernels as cpu_kernels
from workers.optimizers import build, get_spec, resolve_hparams

OPTIMIZERS = ("cautious", "mars", "adamh", "muonh", "lion", "adam_mini", "sophia")


class CountingKernels:
    """The compiled module, counting calls per kernel."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        function = getattr(self.module, name)

        def counted(*args: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return function(*args)

        return counted


def _train(name: str, steps: int = 8, hp: dict[str, Any] | None = None) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(SCALES["tiny-130k"])
    opt = build(name, model, resolve_hparams(get_spec(name), "tiny", hp or {}))
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen) * 0.05  # global norm ~18: every clip at 1 acts
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def _kernels() -> ModuleType:
    module = cpu_kernels.load()
    assert module is not None, "the CPU kernels did not build (see the RuntimeWarning): a C++ compiler and ninja?"
    return module


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_kernels_match_the_torch_op_paths(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingKernels(_kernels())
    monkeypatch.setattr(cpu_kernels, "load", lambda: counting)
    fast = _train(name)
    assert counting.calls, f"{name} never called a CPU kernel"
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
    counting.calls.clear()
    reference = _train(name)
    assert not counting.calls
    # Sophia without an HVP has h = 0, so u = m / floor with a slope of 1 / floor where |m| < clip x floor: there a
    # rounding difference in m (an FMA) moves an element by up to ~1e-5 (1 of 4096 at 8 steps). Elsewhere: rounding.
    atol = 1e-4 if name == "sophia" else 2e-6
    for a, b in zip(fast, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=atol)


def test_the_clip_factor_reaches_the_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    # AdamH's clip is a factor passed into the moments pass (scaled_clip_rules): with clipping off the result
    # must differ, and with it on match the torch ops (above); here: off against on, both through the kernels.
    _kernels()
    clipped = _train("adamh")
    unclipped = _train("adamh", hp={"max_grad_norm": 0.0})
    assert max(float((a - b).abs().max()) for a, b in zip(clipped, unclipped, strict=True)) > 1e-4


def test_counts_and_sums_are_exact_past_float_range() -> None:
    # 2^24 + 5 elements: a float accumulator could not count them all (2^24 + 1 is not a float); the kernels sum
    # chunks of 16384 in float (so sums are float-accurate, ~1e-7) and the chunks in double.
    kernels = _kernels()
    n = 2**24 + 5
    g = torch.full((n,), 1e-3)
    small = [torch.full((7,), -1e-3), torch.zeros(7), torch.zeros(7)]
    big = [g, torch.zeros(n), torch.zeros(n)]
    lists = [[b, s] for b, s in zip(big, small, strict=True)]  # g, m, v of two tensors
    counts = kernels.cautious_moments(*lists, 0.9, 0.95, [0.1, 0.1], [0.05**0.5] * 2, 1e-8)
    assert counts == [n, 7]  # u has g's sign everywhere
    x = torch.randn(3_000_001, generator=torch.Generator().manual_seed(3))
    y = torch.randn(10, generator=torch.Generator().manual_seed(4))
    expected = float(x.double().pow(2).sum() + y.double().pow(2).sum())
    assert kernels.sumsq([x, y]) == pytest.approx(expected, rel=1e-6)


def test_only_contiguous_float32_cpu_tensors_take_the_kernels() -> None:
    x = torch.zeros(4, 3)
    assert cpu_kernels.usable([x])
    assert not cpu_kernels.usable([x.double()])
    assert not cpu_kernels.usable([x.bfloat16()])
    assert not cpu_kernels.usable([x.mT])
    assert cpu_kernels.kernels_for([x], []) is None  # an empty list: nothing to do


def test_switched_off_or_unbuildable_kernels_fall_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "off")
    assert cpu_kernels.kernels_for([torch.zeros(3)]) is None
    monkeypatch.delenv(cpu_kernels.ENV_SWITCH)
    # A build that fails (here: a missing source) warns once and the optimizers keep working on torch ops.
    monkeypatch.setattr(cpu_kernels, "_loaded", {})
    monkeypatch.setattr(cpu_kernels, "SOURCE", tmp_path / "missing.cpp")
    monkeypatch.setattr(cpu_kernels, "_cpu_signature", lambda: "missing-source-test")  # not the real build's dir
    with pytest.warns(RuntimeWarning, match="kernels unavailable"):
        assert cpu_kernels.load() is None
    assert cpu_kernels.load() is None  # remembered: no second build, no second warning
    params = _train("cautious", steps=2)
    assert all(bool(torch.isfinite(p).all()) for p in params)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_nan_gradient_spreads_as_with_torch_ops(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A diverged run must look diverged: where torch ops turn a NaN gradient into NaN parameters, so do the kernels.
    def poisoned_step(kernels_on: bool) -> list[torch.Tensor]:
        monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "1" if kernels_on else "0")
        torch.manual_seed(0)
        model = build_model(SCALES["tiny-130k"])
        opt = build(name, model, resolve_hparams(get_spec(name), "tiny", {}))
        for p in model.parameters():
            p.grad = torch.full_like(p, 0.01)
        next(iter(model.parameters())).grad[0, 0] = float("nan")  # type: ignore[index]
        opt.step()
        return [torch.isfinite(p) for p in model.parameters()]

    _kernels()
    expected = poisoned_step(False)
    got = poisoned_step(True)
    assert not bool(got[0][0, 0]), "the poisoned element stayed finite"
    if name == "lion":  # torch.sign(NaN) is 0 on CPU, jnp.sign(NaN) is NaN: the kernel follows optax
        assert all(bool((g <= w).all()) for g, w in zip(got, expected, strict=True))  # NaN at least where torch ops
        return
    for g, w in zip(got, expected, strict=True):
        assert torch.equal(g, w)


def test_misuse_raises_instead_of_crashing() -> None:
    # The kernels check their lists before the parallel loop (an exception inside it would abort the process).
    kernels = _kernels()
    x = torch.zeros(8)
    with pytest.raises(RuntimeError, match="contiguous float32 CPU"):
        kernels.sumsq([x.double()])
    with pytest.raises(RuntimeError, match="contiguous float32 CPU"):
        kernels.lion_step([torch.zeros(4, 4).mT], [torch.zeros(4, 4)], [torch.zeros(4, 4)], 0.9, 0.99, 1e-3, 0.0)
    with pytest.raises(RuntimeError, match="different lengths"):
        kernels.lion_step([x], [x, x], [x], 0.9, 0.99, 1e-3, 0.0)
    with pytest.raises(RuntimeError, match="sizes differ"):
        kernels.mars_sumsq([x], [torch.zeros(9)], 0.1)
    with pytest.raises(RuntimeError, match="one scalar per tensor"):
        kernels.cautious_moments([x], [x.clone()], [x.clone()], 0.9, 0.95, [0.1, 0.1], [0.2], 1e-8)
