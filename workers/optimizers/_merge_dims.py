"""Levanter's `merge_small_dims` for SOAP (target 2048) and Kron (target 8192).

Levanter reshapes every parameter before preconditioning it: consecutive dims are grouped so that the merged sizes
come closest to a target, by a loss on each merged size d (stanford-crfm/levanter src/levanter/optim/soap.py and
kron.py, `_merge_small_dims`, its inner `dim2loss`; written here from that description):
    d < target:  log2(target / d), plus 100 log2(target / 8 / d) when d < target / 8
    d >= target: 10 log2(d / target), plus 1000 log2(d / (8 target)) when d > 8 target
summed over the groups; the grouping of least loss wins (the first found on ties, trying groupings with shorter
first groups first, as Levanter's `_partitions` enumerates them). A merged dim is "null" (left unpreconditioned:
SOAP's no rotation, Kron's diagonal factor) only if every dim merged into it is.

At the paper's scales no Llama matrix merges (512 x 2048 etc. are near the targets); on the tiny ladder a 64 x 64
matrix becomes a 4096 vector (SOAP then rotates it in block_size blocks, Kron preconditions it diagonally),
while SOAP keeps tiny-1.2m's 192 x 192 matrices 2-D (36,864 > 8 x 2048).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

# Levanter SoapConfig.target_merged_dim_size = 2048; Levanter KronConfig.target_merged_dim_size = 8192.
SOAP_TARGET = 2048
KRON_TARGET = 8192


def dim_loss(d: int, target: int) -> float:
    """Levanter's `dim2loss`: least at d = target, steep below target / 8 and above 8 x target."""
    if d < target:
        loss = math.log2(target / d)
        if d < target / 8:
            loss += 100 * math.log2(target / 8 / d)
        return loss
    loss = 10 * math.log2(d / target)
    if d > 8 * target:
        loss += 1000 * math.log2(d / (8 * target))
    return loss


def _groupings(n: int, start: int = 0) -> Iterator[list[tuple[int, int]]]:
    """Every split of dims start..n-1 into consecutive runs (start, end), shorter first runs first."""
    if start == n:
        yield []
        return
    for end in range(start + 1, n + 1):
        for rest in _groupings(n, end):
            yield [(start, end), *rest]


def merge_small_dims(
    shape: Sequence[int], target: int, null: Sequence[bool]
) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """The merged shape of `shape` and, per merged dim, whether it is null (all of its dims were)."""
    if len(shape) != len(null):
        raise ValueError(f"shape {tuple(shape)} and null flags {tuple(null)} differ in length")
    if not shape or all(s == 1 for s in shape):
        return tuple(shape), tuple(null)
    best: list[tuple[int, int]] | None = None
    best_loss = math.inf
    for grouping in _groupings(len(shape)):
        loss = sum(dim_loss(math.prod(shape[a:b]), target) for a, b in grouping)
        if loss < best_loss:
            best, best_loss = grouping, loss
    assert best is not None
    return (
        tuple(math.prod(shape[a:b]) for a, b in best),
        tuple(all(null[a:b]) for a, b in best),
    )
