"""Optimizer unit tests run Newton-Schulz in float32 on every CPU, so that a test's tolerance does not depend on
whether the machine has bf16 instructions (workers/optimizers/_newton_schulz.py picks bf16 where they exist).
tests/workers/optimizers/test_newton_schulz_dtype.py checks the bf16 choice and bounds its difference."""

from __future__ import annotations

import pytest

from workers.optimizers import _newton_schulz


@pytest.fixture(autouse=True)
def newton_schulz_in_float32_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_newton_schulz, "cpu_has_fast_bf16", lambda: False)
