from __future__ import annotations

import math

import pytest

from workers.schedules import lr_factor


def test_cosine_at_exact_steps() -> None:
    total, warmup = 1000, 100
    f = lambda s: lr_factor(s, total, kind="cosine", warmup=warmup)  # noqa: E731
    assert f(0) == 0.0
    assert f(50) == pytest.approx(0.5)
    assert f(100) == pytest.approx(1.0)  # end of warmup: the peak
    assert f(550) == pytest.approx(0.5)  # middle of the decay: cos(pi/2)
    assert f(999) == pytest.approx(0.5 * (1 + math.cos(math.pi * 899 / 900)))
    assert f(999) < 1e-4


def test_cosine_to_min_lr_ratio() -> None:
    f = lambda s: lr_factor(s, 200, kind="cosine", warmup=0, min_lr_ratio=0.1)  # noqa: E731
    assert f(0) == pytest.approx(1.0)
    assert f(100) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(200) == pytest.approx(0.1)


def test_linear() -> None:
    f = lambda s: lr_factor(s, 110, kind="linear", warmup=10)  # noqa: E731
    assert f(5) == pytest.approx(0.5)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5)
    assert f(110) == pytest.approx(0.0)


def test_wsd_stable_then_linear_decay() -> None:
    # Muon's schedule: warmup 0, decay over the last 20% of 1000 steps.
    f = lambda s: lr_factor(s, 1000, kind="wsd", warmup=0, decay=0.2)  # noqa: E731
    assert f(0) == 1.0
    assert f(799) == 1.0
    assert f(800) == pytest.approx(1.0)
    assert f(900) == pytest.approx(0.5)
    assert f(999) == pytest.approx(1 / 200)


def test_wsd_decay_never_starts_before_warmup_ends() -> None:
    assert lr_factor(60, 100, kind="wsd", warmup=80, decay=1.0) == pytest.approx(0.75)
    assert lr_factor(80, 100, kind="wsd", warmup=80, decay=1.0) == pytest.approx(1.0)
    assert lr_factor(90, 100, kind="wsd", warmup=80, decay=1.0) == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs", [{"kind": "step"}, {"decay": 1.5}])
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        lr_factor(0, 10, **kwargs)  # type: ignore[arg-type]
