"""Optimizer and scale facts without importing torch (DESIGN.md, "Inside sweep_service/"): the scale presets
with their family and non-embedding parameter count, and the names of the registered optimizers.

The scales come from workers/scales.py, the module workers/model.py builds the model from, so they cannot
drift. The optimizer names are the modules of workers/optimizers/ that are optimizers (one per file, named as
the optimizer: the registry's rule, workers/optimizers/__init__.py), listed without importing them;
tests/sweep_service/test_catalog.py checks they are exactly workers.optimizers.REGISTRY's keys. What needs an
optimizer's spec (defaults, routing, search spaces) imports workers.optimizers, and torch with it.
"""

from __future__ import annotations

import functools
import math
import pkgutil
from importlib.util import find_spec
from pathlib import Path

from workers.scales import SCALES, ModelConfig, chinchilla_tokens, non_embedding_params

# workers/optimizers/__init__.py: modules that start with "_" and these two are not optimizers.
_NOT_OPTIMIZERS = frozenset({"base", "functional"})

__all__ = [
    "SCALES",
    "ModelConfig",
    "chinchilla_tokens",
    "family_of",
    "non_embedding_params",
    "optimizer_names",
    "scale_families",
    "scale_params",
]


@functools.cache
def optimizer_names() -> tuple[str, ...]:
    """The registered optimizers' names, sorted (the registry's order), read from the package's file names."""
    spec = find_spec("workers.optimizers")
    assert spec is not None and spec.submodule_search_locations is not None, "workers.optimizers is missing"
    paths = [str(Path(p)) for p in spec.submodule_search_locations]
    names = (m.name for m in pkgutil.iter_modules(paths))
    return tuple(sorted(n for n in names if not n.startswith("_") and n not in _NOT_OPTIMIZERS))


def scale_params() -> dict[str, int]:
    """Non-embedding parameter count N of every scale preset (PAPER.md section 2's count)."""
    return {name: non_embedding_params(cfg) for name, cfg in SCALES.items()}


def scale_families() -> dict[str, tuple[str, int]]:
    """scale -> (family, N): the family picks the paper's or the tiny grids; N is the scaling laws' x axis."""
    return {name: (cfg.family, non_embedding_params(cfg)) for name, cfg in SCALES.items()}


def family_of(scale: str, n_params: float) -> str | None:
    """The family of `scale`; for a scale the catalog lacks (imported results, a target size), the family of
    the preset nearest to `n_params` in log space; None without a usable N."""
    families = scale_families()
    if scale in families:
        return families[scale][0]
    if not (math.isfinite(n_params) and n_params > 0):
        return None
    return min(families.values(), key=lambda fn: (abs(math.log(fn[1]) - math.log(n_params)), fn[0]))[0]
