"""The optimizer registry: every module in this package that defines `SPEC` is registered under its name.

One optimizer per file (timm's optim/ layout); adding a file adds an optimizer, and the contract tests in
tests/workers/optimizers/test_contract.py pick it up without a new test.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence

import torch
from torch import nn

from workers.optimizers.base import (
    HessianOptimizer,
    HParam,
    HParams,
    OptimizerSpec,
    SearchSpace,
    resolve_hparams,
)

_NOT_OPTIMIZERS = {"base", "functional"}


def _discover() -> dict[str, OptimizerSpec]:
    registry: dict[str, OptimizerSpec] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in _NOT_OPTIMIZERS:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, OptimizerSpec):
            if spec.name in registry:
                raise RuntimeError(f"optimizer name {spec.name!r} is registered twice")
            registry[spec.name] = spec
    return registry


REGISTRY: dict[str, OptimizerSpec] = _discover()


def get_spec(name: str) -> OptimizerSpec:
    """The spec registered as `name`; an unknown name raises a ValueError that lists the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(REGISTRY)}") from None


def build(name: str, model: nn.Module, hparams: HParams | None = None) -> torch.optim.Optimizer:
    """Build optimizer `name` for `model`; `hparams` may be partial (filled from the spec's tiny/paper defaults)."""
    spec = get_spec(name)
    family = getattr(getattr(model, "config", None), "family", "tiny")
    return spec.build(model, resolve_hparams(spec, family, hparams))


def prepare_cpu_kernels(spec: OptimizerSpec, params: Sequence[torch.Tensor]) -> bool:
    """Build (first use, ~40 s) or load the CPU kernels now if `spec`'s step will call them on `params`, so that
    the build lands before a caller's clock starts, not inside the first step; True when they are ready."""
    from workers.optimizers import _cpu_kernels

    if not spec.cpu_kernels or not params or not _cpu_kernels.usable(params):
        return False
    return _cpu_kernels.load() is not None


__all__ = [
    "REGISTRY",
    "HParam",
    "HParams",
    "HessianOptimizer",
    "OptimizerSpec",
    "SearchSpace",
    "build",
    "get_spec",
    "prepare_cpu_kernels",
    "resolve_hparams",
]
