"""Newton-Schulz: a float64 oracle written from the formula, the singular-value band, invariances, batching.

The coefficients and the iteration are checked against optax's own implementation in
tests/oracles/test_oracle_orthogonal.py (an oracle not written from our notes).
"""

from __future__ import annotations

import pytest
import torch

from workers.optimizers import _newton_schulz as ns
from workers.optimizers._newton_schulz import (
    compute_dtype_for,
    newton_schulz,
    newton_schulz_many,
)


def oracle(G: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Levanter's zeropower_via_newtonschulz5 written out in float64 (OPTIMIZERS.md 3.7)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.double() / (torch.linalg.matrix_norm(G.double()) + eps)
    transpose = X.shape[0] > X.shape[1]
    if transpose:
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.T if transpose else X


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("shape", [(32, 96), (96, 32), (48, 48), (1, 16)])
@pytest.mark.parametrize("steps", [0, 1, 5, 10])
def test_matches_the_float64_oracle(shape: tuple[int, int], steps: int) -> None:
    G = randn(*shape)
    torch.testing.assert_close(newton_schulz(G, steps=steps), oracle(G, steps), rtol=1e-12, atol=1e-12)


def test_float32_is_close_to_the_oracle() -> None:
    G = randn(64, 256)
    out = newton_schulz(G.float())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), oracle(G), rtol=0, atol=1e-4)


@pytest.mark.parametrize("shape", [(64, 256), (256, 64), (128, 512), (32, 128)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_singular_values_lie_in_the_band(shape: tuple[int, int], dtype: torch.dtype) -> None:
    # OPTIMIZERS.md 6.2/7.2: rectangular Gaussians give singular values in [0.68, 1.13] after NS5.
    s = torch.linalg.svdvals(newton_schulz(randn(*shape, dtype=dtype)).double())
    assert s.min() >= 0.6 and s.max() <= 1.2, (s.min().item(), s.max().item())
    assert s.min() >= 0.67 and s.max() <= 1.14  # the computed band, a little slack


def test_ten_steps_stay_in_the_band() -> None:
    # Scion runs 10 steps (OPTIMIZERS.md 3.8): the quintic does not converge to 1, it oscillates inside a band.
    s = torch.linalg.svdvals(newton_schulz(randn(64, 256), steps=10))
    assert s.min() >= 0.6 and s.max() <= 1.2


@pytest.mark.parametrize("c", [1e-6, 1e-2, 3.0, 1e4])
def test_scale_invariance(c: float) -> None:
    G = randn(48, 80)
    # eps tiny: then NS(cG) = NS(G) up to rounding; with the default eps it holds up to eps / ||cG||.
    torch.testing.assert_close(newton_schulz(c * G, eps=1e-30), newton_schulz(G, eps=1e-30), rtol=1e-10, atol=1e-12)


def test_eps_is_added_to_the_norm_as_in_levanter() -> None:
    G = randn(8, 16) * 1e-6  # ||G||_F ~ 1e-5, comparable to eps = 1e-5 (the paper's muon_eps)
    out = newton_schulz(G, steps=0, eps=1e-5)
    torch.testing.assert_close(out, G / (torch.linalg.matrix_norm(G) + 1e-5), rtol=1e-14, atol=0)


def test_transpose_symmetry() -> None:
    G = randn(40, 72)
    assert torch.equal(newton_schulz(G.T), newton_schulz(G).T)
    assert torch.equal(newton_schulz_many([G.T])[0], newton_schulz(G).T)


def test_zero_matrix_stays_zero() -> None:
    assert torch.equal(newton_schulz(torch.zeros(4, 8)), torch.zeros(4, 8))


def test_stacks_are_normalised_per_matrix() -> None:
    G = torch.stack([randn(16, 24, seed=1), 1e3 * randn(16, 24, seed=2)])  # (2, 16, 24)
    out = newton_schulz(G)
    for i in range(2):
        torch.testing.assert_close(out[i], oracle(G[i]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch_max", [256 * 256, 64 * 64])  # the default, and one that loops the larger groups
def test_many_matches_one_by_one_and_keeps_order_and_shapes(batch_max: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ns, "CPU_BATCH_MAX_ELEMENTS", batch_max)
    shapes = [(64, 64), (128, 32), (32, 128), (64, 64), (24, 40), (128, 32), (40, 24), (96, 96)]
    Gs = [randn(*s, seed=i) for i, s in enumerate(shapes)]
    outs = newton_schulz_many(Gs)
    assert [tuple(o.shape) for o in outs] == shapes
    for G, out in zip(Gs, outs, strict=True):
        torch.testing.assert_close(out, oracle(G), rtol=1e-12, atol=1e-12)
    outs32 = newton_schulz_many([G.float() for G in Gs])
    for G, out in zip(Gs, outs32, strict=True):
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), oracle(G), rtol=0, atol=1e-4)


def test_precision_policy() -> None:
    assert compute_dtype_for(torch.zeros(2, 2)) == torch.float32  # CPU: float32 (module docstring)
    assert compute_dtype_for(torch.zeros(2, 2, dtype=torch.bfloat16)) == torch.float32
    assert compute_dtype_for(torch.zeros(2, 2, dtype=torch.float64)) == torch.float64
    # bf16 params are orthogonalised in float32 and come back float32.
    assert newton_schulz(randn(8, 16).bfloat16()).dtype == torch.float32


def test_bfloat16_compute_is_within_bf16_tolerance() -> None:
    G = randn(64, 128)
    out = newton_schulz(G.float(), compute_dtype=torch.bfloat16)
    assert out.dtype == torch.float32
    rel = torch.linalg.matrix_norm(out.double() - oracle(G)) / torch.linalg.matrix_norm(oracle(G))
    assert rel < 2e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_runs_in_bfloat16() -> None:
    G = randn(64, 128).float().cuda()
    assert compute_dtype_for(G) == torch.bfloat16
    expected = oracle(G.cpu())
    rel = torch.linalg.matrix_norm(newton_schulz(G).cpu().double() - expected) / torch.linalg.matrix_norm(expected)
    assert rel < 2e-2


def test_rejects_vectors() -> None:
    with pytest.raises(ValueError):
        newton_schulz(torch.zeros(4))
    with pytest.raises(ValueError):
        newton_schulz_many([torch.zeros(2, 2, 2)])
