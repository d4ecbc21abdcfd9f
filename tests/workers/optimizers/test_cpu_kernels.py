"""The one-pass CPU kernels (workers/optimizers/_cpu_kernels.cpp) against the torch-op paths they replace.

The torch-op paths are the reference: the optax oracles (tests/oracles, float64, which the kernels never take)
and test_fused_paths check them. Here the same float32 training steps run both ways, with the global-norm clips
active, and the kernels must really be taken (a test that fails if they silently fall back)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch.utils.cpp_extension import _get_build_directory

from workers import trainer
from workers.model import SCALES, build_model
from workers.optimizers import REGISTRY, build, get_spec, resolve_hparams
from workers.optimizers import _cpu_kernels as cpu_kernels

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
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))  # not the real build's cache
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


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_the_spec_says_whether_the_step_calls_the_kernels(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # OptimizerSpec.cpu_kernels decides whether the trainer builds them before its clock starts.
    counting = CountingKernels(_kernels())
    monkeypatch.setattr(cpu_kernels, "load", lambda: counting)
    _train(name, steps=2)
    assert bool(counting.calls) == get_spec(name).cpu_kernels, counting.calls


def test_the_trainer_builds_the_kernels_before_its_clock_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    # A trial process that has not loaded them yet: the build (~40 s the first time on a machine) must not land in
    # the first timed step, where it would count as training time (tokens_per_second, train_seconds).
    events: list[str] = []
    real = _kernels()
    monkeypatch.setattr(cpu_kernels, "_loaded", {})
    factor = trainer.lr_factor

    def build() -> ModuleType:
        events.append("build")
        return real

    def timed_step(*args: Any, **kwargs: Any) -> float:  # the trainer's clock starts each step just before it
        events.append("timed step")
        return factor(*args, **kwargs)

    monkeypatch.setattr(cpu_kernels, "_build", build)
    monkeypatch.setattr(trainer, "lr_factor", timed_step)
    trainer.train(trainer.RunConfig(optimizer="lion", scale="tiny-130k", chinchilla=0.1, max_steps=2, eval_every=2))
    assert events[:2] == ["build", "timed step"] and events.count("build") == 1


def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh process's view of a private torch extensions dir: the build directory of this source's kernels."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "_loaded", {})
    return Path(_get_build_directory(cpu_kernels.build_name(), verbose=False))


def _compiled_from(real: ModuleType, seen: list[Path], build_dir: Path) -> Any:
    def compile_(name: str) -> ModuleType:  # stands in for torch's ninja build (~40 s): the real module
        seen.extend(build_dir.iterdir())
        return real

    return compile_


def test_a_killed_builder_never_hangs_the_next_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A builder killed mid-build leaves torch's lock file ("lock", a FileBaton that later builds wait on forever).
    # Ours is an flock: while its holder lives the next process waits (here 0.5 s, then torch ops, warned); once the
    # holder is killed -9 the kernel frees it, and the next build removes the dead builder's baton and goes on.
    real = _kernels()
    build_dir = _private_cache(monkeypatch, tmp_path)
    (build_dir / "lock").write_text("")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('held', flush=True); time.sleep(600)", str(build_dir / "sweep-build.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(cpu_kernels, "BUILD_WAIT_SECONDS", 0.5)
        seen: list[Path] = []
        monkeypatch.setattr(cpu_kernels, "_compile", _compiled_from(real, seen, build_dir))
        with pytest.warns(RuntimeWarning, match="held the build lock"):
            assert cpu_kernels.load() is None
        assert not seen
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        monkeypatch.setattr(cpu_kernels, "_loaded", {})
        assert cpu_kernels.load() is real
        assert seen and build_dir / "lock" not in seen  # the baton was gone before the build started
    finally:
        holder.kill()
        holder.wait(timeout=30)


_FRESH_PROCESS = """
import sys, torch
from workers.optimizers import _cpu_kernels as kernels
def compile_(name):
    print("compiled", flush=True)
    raise SystemExit(0)
kernels._compile = compile_
module = kernels.load()
print(module.__file__, module.sumsq([torch.full((5,), 2.0)]))
"""


def test_a_finished_build_loads_without_a_compiler(tmp_path: Path) -> None:
    # Every trial process after the first (a fresh process, as a Ray trial is): the .so is imported directly, with
    # no ninja run and no torch file lock; a truncated one (a link cut short by kill -9) is built again.
    real = _kernels()
    assert real.__file__ is not None
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).parents[3])}
    library = tmp_path / cpu_kernels.build_name() / f"{cpu_kernels.build_name()}.so"
    library.parent.mkdir()
    shutil.copyfile(real.__file__, library)

    def fresh_process() -> str:
        done = subprocess.run([sys.executable, "-c", _FRESH_PROCESS], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    assert fresh_process() == f"{library} 20.0"
    library.write_bytes(b"\x7fELF cut short")
    assert fresh_process() == "compiled" and not library.exists()
