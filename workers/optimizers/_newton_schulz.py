"""The quintic Newton-Schulz iteration that Muon, Scion and MuonH use to orthogonalise an update.

NS(G): X <- G / (||G||_F + eps); transpose X when it has more rows than columns (so X X^T is the smaller
Gram matrix); then `steps` times {A = X X^T; B = b A + c A^2; X = a X + B X}; transpose back.
Coefficients (a, b, c) = (3.4445, -4.7750, 2.0315) are Keller Jordan's (OPTIMIZERS.md 3.7, KJ muon.py), the
ones Levanter's `zeropower_via_newtonschulz5` uses for Muon and Scion (OPTIMIZERS.md section 1, LV-muon).
Levanter divides by (||G||_F + eps) (torch.optim.Muon clamps the norm at eps instead); we follow Levanter,
because its `muon_epsilon` / `scion_epsilon` are tuned hyperparameters of the paper (PAPER.md section 3).

Precision: bfloat16 where the device multiplies bf16 fast: CUDA, and CPUs with native bf16 dot products
(avx512_bf16 or amx_bf16 in /proc/cpuinfo, `cpu_has_fast_bf16`); float32 on other CPUs, where bf16 matrix
products are ~19x slower than float32 (OPTIMIZERS.md 7.3); float64 for float64 inputs (reference tests). The
references run in bf16 too (KJ, torch.optim.Muon) and Levanter on TPU multiplies at bf16 precision by default. On
this repo's 2-core EPYC (avx512_bf16) bf16 is ~2x faster (256x1024 @ 1024x256: 0.67 vs 1.31 ms, one thread). The
bf16 result differs from the fp32 one by ~1-3% (relative Frobenius norm, tests/workers/optimizers/
test_newton_schulz_dtype.py bounds it), well inside the paper's seed noise. A trial's numerics therefore depend on
whether its CPU has bf16 instructions; the reproducibility record names the CPU. `compute_dtype` overrides the
choice. The result is float32 (float64 for float64 inputs) whatever the compute precision.

Speed: `newton_schulz_many` orients every matrix wide (rows <= cols), groups equal oriented shapes and runs
one batched iteration per group, so a Llama block's q/k/v/o share one batched call and the MLP's w1, w3
(d_ff x d, transposed) and w2 (d x d_ff) share another. That removes the per-matrix dispatch and thread
start-up overhead that dominates on small models (measured on the 2-core CPU, 2 threads: 8 matrices of 64x64
1.0 ms batched vs 7.2 ms one by one; 128x128 11.9 vs 35.5 ms; 256x256 23 vs 54 ms) and keeps a GPU busy.
On a CPU, matrices above CPU_BATCH_MAX_ELEMENTS run one by one: there batching gains nothing (256x1024:
59 vs 55 ms; 512x512: 188 vs 182 ms) and stacking would copy every matrix once more.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch

# Keller Jordan's quintic coefficients, chosen to maximise the slope at zero (OPTIMIZERS.md 3.7, KJ muon.py).
KJ_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)

# Largest matrix (rows x cols) stacked into a batch on a CPU; see the module docstring for the timings.
CPU_BATCH_MAX_ELEMENTS = 256 * 256


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when this CPU has native bf16 dot-product instructions (Linux /proc/cpuinfo: avx512_bf16, amx_bf16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: assume no fast bf16 (float32 has no slow path anywhere)
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def compute_dtype_for(t: torch.Tensor) -> torch.dtype:
    """float64 for float64 inputs; bfloat16 on CUDA and on CPUs with fast bf16; float32 otherwise (see above)."""
    if t.dtype == torch.float64:
        return torch.float64
    if t.device.type == "cuda" or (t.device.type == "cpu" and cpu_has_fast_bf16()):
        return torch.bfloat16
    return torch.float32


def _result_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


@torch.no_grad()
def newton_schulz(
    G: torch.Tensor,
    steps: int = 5,
    eps: float = 1e-7,
    coefficients: tuple[float, float, float] = KJ_COEFFICIENTS,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """NS applied to each matrix of G, shape (..., m, n), each normalised by its own Frobenius norm.

    eps defaults to KJ's 1e-7; Muon passes its `muon_eps`, Scion its `scion_eps`. Returns float32 (float64 for
    float64 input) with G's shape. `compute_dtype` overrides the precision of the iteration (tests use it to
    reproduce torch.optim.Muon's bfloat16).
    """
    if G.ndim < 2:
        raise ValueError(f"Newton-Schulz needs a matrix or a stack of matrices, got shape {tuple(G.shape)}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    dtype = compute_dtype or compute_dtype_for(G)
    m, n = G.shape[-2], G.shape[-1]
    transpose = m > n
    X = G.mT if transpose else G  # (..., r, c) with r <= c
    X = X.reshape(-1, X.shape[-2], X.shape[-1])  # (L, r, c): one batch dimension for baddbmm
    X = _newton_schulz_wide(X, steps, eps, coefficients, dtype)
    X = X.to(_result_dtype(G))
    X = X.reshape(*G.shape[:-2], X.shape[-2], X.shape[-1])  # (..., r, c)
    return X.mT if transpose else X


def _newton_schulz_wide(
    X: torch.Tensor, steps: int, eps: float, coefficients: tuple[float, float, float], dtype: torch.dtype
) -> torch.Tensor:
    """The iteration on a (L, r, c) stack with r <= c; returns a contiguous (L, r, c) stack in `dtype`."""
    a, b, c = coefficients
    # Normalise in at least float32 so that a bfloat16 run starts from an accurately scaled matrix.
    norm_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    X = X.to(norm_dtype)
    norms = torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True)  # (L, 1, 1)
    X = (X / (norms + eps)).to(dtype)  # Levanter: X / (||X||_F + eps), spectral norm <= 1
    for _ in range(steps):
        A = torch.bmm(X, X.mT)  # (L, r, r) Gram matrix
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b A + c A^2, (L, r, r)
        X = torch.baddbmm(X, B, X, beta=a, alpha=1.0)  # a X + B X, (L, r, c)
    return X.contiguous()


@torch.no_grad()
def newton_schulz_many(
    matrices: Sequence[torch.Tensor],
    steps: int = 5,
    eps: float = 1e-7,
    coefficients: tuple[float, float, float] = KJ_COEFFICIENTS,
    compute_dtype: torch.dtype | None = None,
) -> list[torch.Tensor]:
    """NS of every 2-D matrix in `matrices` (each normalised on its own), batched over equal oriented shapes.

    Returns one float32 (float64 for float64 input) tensor per input, in order, each with its input's shape.
    Matrices on different devices or with different dtypes are never stacked together.
    """
    out: list[torch.Tensor | None] = [None] * len(matrices)
    groups: dict[tuple[int, int, torch.device, torch.dtype], list[int]] = {}
    for i, G in enumerate(matrices):
        if G.ndim != 2:
            raise ValueError(f"newton_schulz_many takes 2-D matrices, got shape {tuple(G.shape)}")
        m, n = G.shape
        key = (min(m, n), max(m, n), G.device, G.dtype)
        groups.setdefault(key, []).append(i)
    for idx in groups.values():
        first = matrices[idx[0]]
        dtype = compute_dtype or compute_dtype_for(first)
        if len(idx) == 1 or (first.device.type == "cpu" and first.numel() > CPU_BATCH_MAX_ELEMENTS):
            for i in idx:
                out[i] = newton_schulz(matrices[i], steps, eps, coefficients, dtype)
            continue
        wide = [matrices[i].mT if matrices[i].shape[0] > matrices[i].shape[1] else matrices[i] for i in idx]
        X = torch.stack(wide)  # (L, r, c), every member oriented wide
        X = _newton_schulz_wide(X, steps, eps, coefficients, dtype).to(_result_dtype(first))
        for j, i in enumerate(idx):
            transpose = matrices[i].shape[0] > matrices[i].shape[1]
            out[i] = X[j].mT if transpose else X[j]  # (r, c) or its transpose (c, r)
    assert all(t is not None for t in out)
    return out  # type: ignore[return-value]
