"""The GPU path (issue 18 item 3): what bench/gpu_check.py measures, at the tiny scales on CUDA.

Every test carries the `gpu` marker (`pytest -m gpu`) and skips with the reason on a machine without CUDA."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason=f"needs CUDA (torch {torch.__version__} sees no CUDA device; CUDA build: {torch.version.cuda})",
    ),
]


def gpu_check() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gc() -> ModuleType:
    return gpu_check()


def test_trainer_bf16_eager_and_compiled(gc: ModuleType, tmp_path: Path) -> None:
    plan = dataclasses.replace(gc.TINY_PLAN, compile=True)
    tokens = gc.write_tokens(tmp_path / "tokens", plan.vocab, 64 * plan.batch * 129)
    out = gc.check_trainer(plan, torch.device("cuda"), tokens)
    for key in ("trainer_eager", "plain_eager", "trainer_compiled", "plain_compiled"):
        assert out[key]["tokens_per_second"] > 0 and out[key]["peak_memory_gib"] > 0


def test_every_optimizer_with_bf16_params(gc: ModuleType) -> None:
    rows = gc.check_optimizers(gc.TINY_PLAN, torch.device("cuda"))["optimizers"]
    assert len(rows) == 13
    for name, row in rows.items():
        assert row["param_dtype"] == "bfloat16"
        assert row["finite"] and row["loss_dropped"], (name, row)


def test_sophia_hvp_under_bf16(gc: ModuleType) -> None:
    out = gc.check_sophia_hvp(gc.TINY_PLAN, torch.device("cuda"))
    assert out["hessian_finite"] and out["hessian_nonzero"]


def test_newton_schulz_bf16_close_to_fp32(gc: ModuleType) -> None:
    plan = dataclasses.replace(gc.TINY_PLAN, ns_shapes=((512, 512), (512, 2048), (2048, 512)))
    out = gc.check_newton_schulz(plan, torch.device("cuda"))
    assert 0 < out["max_relative_difference"] < 0.05


def test_one_step_at_the_big_tiny_scale(gc: ModuleType) -> None:
    out = gc.check_big(gc.TINY_PLAN, torch.device("cuda"))
    assert out["adamw"]["finite"] and out["muon"]["finite"]
