"""The optimizer interface: each optimizer is data (an `OptimizerSpec`) plus a build function.

Modelled on Levanter's optimizer configs (STYLE.md): a spec says which hyperparameters an optimizer has
(with the paper's names and defaults), which parameters get which rule, whether it clips gradients
itself, which learning-rate schedule it uses by default, and its default search spaces.

Contract of `OptimizerSpec.build(model, hparams)`:
- `hparams` is fully resolved (see `resolve_hparams`): every name in `TRAINER_DEFAULTS` and in the spec's
  `defaults` is present.
- It returns one `torch.optim.Optimizer` over all of `model`'s parameters. Every param group carries its
  peak learning rate in `"lr"`; the trainer stores it once as `"initial_lr"` and rescales `"lr"` every step
  by the schedule (so an auxiliary part's learning rate, such as Muon's AdamW part, follows the same shape).
- If `clips_itself` is False the trainer clips all gradients by global norm (`max_grad_norm`, 0 = off)
  before `step()`. If True, the optimizer applies `max_grad_norm` to exactly the subset the paper clips.
- Its `state_dict()` holds everything needed to continue bitwise (counters, random-number state, ...).
- If `cpu_kernels` is True its step calls the compiled CPU kernels when they can take the tensors (float32, CPU).
- An optimizer that needs Hessian-vector products (Sophia-H) implements `HessianOptimizer`; the trainer
  then computes gradients with `create_graph=True` on the steps it asks for and calls `update_hessian`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from workers.model import param_role

HParam = float | int | bool | str
HParams = Mapping[str, HParam]

# Hyperparameters the trainer itself consumes (PAPER.md section 3 names). Per family because the paper's
# values (warmup 2000 steps, batch 128 x 4096 tokens) would not fit a run of a few hundred CPU steps.
TRAINER_DEFAULTS: dict[str, dict[str, HParam]] = {
    "paper": {
        "lr": 8e-3,  # AdamW 130m 1x best (PAPER.md section 6)
        "warmup": 2000,
        "batch_size": 128,
        "min_lr_ratio": 0.0,
        "decay": 1.0,  # fraction of steps in the final decay; 1.0 = decay from the end of warmup
        "max_grad_norm": 1.0,
        "init": "levanter",  # the model's initialisation (workers.model.INITS); the paper's runs: Levanter's Llama
    },
    "tiny": {
        "lr": 1e-2,  # DESIGN.md calibration: AdamW lr 1e-2 beat 3e-3 at tiny-130k
        "warmup": 50,
        "batch_size": 32,
        "min_lr_ratio": 0.0,
        "decay": 1.0,
        "max_grad_norm": 1.0,
        "init": "levanter",
    },
}
TRAINER_HPARAMS = tuple(TRAINER_DEFAULTS["paper"])

SCHEDULES = ("cosine", "linear", "wsd")


@dataclass(frozen=True)
class SearchSpace:
    """An ordered grid of values per hyperparameter, a baseline (start point) and fixed values."""

    grid: Mapping[str, tuple[HParam, ...]]
    baseline: Mapping[str, HParam]
    fixed: Mapping[str, HParam] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, values in self.grid.items():
            if name not in self.baseline:
                raise ValueError(f"search space: {name!r} has a grid but no baseline value")
            if self.baseline[name] not in values:
                raise ValueError(f"search space: baseline {name}={self.baseline[name]!r} is not in its grid")
            if len(set(values)) != len(values):
                raise ValueError(f"search space: grid of {name!r} repeats a value")
        overlap = set(self.grid) & set(self.fixed)
        if overlap:
            raise ValueError(f"search space: {sorted(overlap)} are both searched and fixed")


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    build: Callable[[nn.Module, HParams], torch.optim.Optimizer]
    # The optimizer's own hyperparameters with the paper's names and defaults. May also override trainer
    # hyperparameters (Muon: warmup 0).
    defaults: Mapping[str, HParam]
    # Default search spaces keyed by model family ("paper", "tiny"); see workers.model.ModelConfig.family.
    spaces: Mapping[str, SearchSpace]
    # Which parameters get which rule and which are decayed, in words (for the catalog and the docs).
    routing: str
    schedule: str = "cosine"
    clips_itself: bool = False
    # Its step uses the compiled CPU kernels (_cpu_kernels.py) on float32 CPU parameters: the trainer builds or
    # loads them before its clock starts, so a first build (~40 s) is not counted as training time.
    cpu_kernels: bool = False
    reference: str = ""

    def hparam_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*TRAINER_HPARAMS, *self.defaults]))


def resolve_hparams(spec: OptimizerSpec, family: str, overrides: HParams | None = None) -> dict[str, HParam]:
    """Trainer defaults, then the spec's defaults, then the family's baseline and fixed values, then overrides.

    An unknown name raises a ValueError that lists the valid ones.
    """
    if family not in TRAINER_DEFAULTS:
        raise ValueError(f"unknown model family {family!r}; valid: {', '.join(TRAINER_DEFAULTS)}")
    resolved: dict[str, HParam] = {**TRAINER_DEFAULTS[family], **spec.defaults}
    space = spec.spaces.get(family)
    if space is not None:
        resolved.update(space.baseline)
        resolved.update(space.fixed)
    for name, value in (overrides or {}).items():
        if name not in resolved:
            raise ValueError(
                f"unknown hyperparameter {name!r} for optimizer {spec.name!r}; valid: {', '.join(sorted(resolved))}"
            )
        check_hparam_type(name, value, resolved[name])
        resolved[name] = value
    return resolved


class HParamTypeError(ValueError):
    """A hyperparameter value of the wrong type (`lr="abc"`); names the hyperparameter and the type expected."""

    def __init__(self, name: str, value: HParam, expected: str) -> None:
        self.name, self.value, self.expected = name, value, expected
        super().__init__(f"hyperparameter {name}={value!r}: expected {expected}")


def check_hparam_type(name: str, value: HParam, default: HParam) -> None:
    """Raise HParamTypeError unless `value` can stand where `default` does: a float takes any finite number, an
    int a whole number (2.0 included: YAML and JSON writers may add the dot), a bool true/false (or 0/1), a
    string a string. Booleans are not numbers here: `lr=true` is a typo, not 1.0. NaN and infinity are not
    hyperparameters: every run with one would diverge, and NaN equals nothing, so no grid could hold it.
    numpy numbers count as numbers (numbers.Integral, numbers.Real)."""
    if isinstance(default, bool):
        expected, ok = "true or false", isinstance(value, bool) or value in (0, 1)
    elif isinstance(default, int | float):
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        finite = number and math.isfinite(value)  # type: ignore[arg-type]
        expected = "an integer" if isinstance(default, int) else "a finite float" if number else "a float"
        if not finite:
            ok = False
        else:
            ok = isinstance(default, float) or isinstance(value, numbers.Integral) or float(value).is_integer()
    else:
        expected, ok = "a string", isinstance(value, str)
    if not ok:
        raise HParamTypeError(name, value, expected)


@runtime_checkable
class HessianOptimizer(Protocol):
    """An optimizer that needs Hessian-vector products of the training loss (Sophia-H).

    Each step the trainer asks `hessian_due()`. If True it computes the gradients of the (micro-batch
    averaged) loss with `torch.autograd.grad(loss, params, create_graph=True)` over `hessian_params()`,
    with attention on the MATH backend (fused kernels lack double backward, OPTIMIZERS.md section 8), and
    calls `update_hessian(grads)`; the optimizer draws its own probe vectors and takes the HVP from `grads`.
    The trainer then uses the detached grads for the ordinary step. `update_hessian` is called before that
    step() but must not change it: the estimate counts from the next step on (Levanter's order: the update is
    computed from the old estimate; see workers/optimizers/sophia.py).
    """

    def hessian_due(self) -> bool: ...

    def hessian_params(self) -> list[torch.Tensor]: ...

    def update_hessian(self, grads: list[torch.Tensor]) -> None: ...


def named_params_by_role(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """(name, parameter) pairs grouped by role: embedding, head, matrix, norm (see workers.model.param_role)."""
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {"embedding": [], "head": [], "matrix": [], "norm": []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[param_role(name)].append((name, p))
    return groups


def is_decayed(role: str) -> bool:
    """Levanter's default weight-decay mask: no decay on norms, embeddings or biases; the head IS decayed."""
    return role in ("matrix", "head")


def decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Two param groups with Levanter's decay mask: decayed (matrices, head) and not (embedding, norms)."""
    decayed: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    for role, pairs in named_params_by_role(model).items():
        (decayed if is_decayed(role) else plain).extend(p for _, p in pairs)
    groups: list[dict[str, object]] = []
    if decayed:
        groups.append({"params": decayed, "weight_decay": weight_decay})
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0})
    return groups
