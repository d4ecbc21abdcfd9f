"""The sweep spec: one document (YAML or JSON) for `sweep-service run SPEC` and for `POST /sweeps`.

    name: quickstart
    optimizers: [adamw, muon]            # cells = optimizers x scales x chinchilla ...
    scales: [tiny-130k]
    chinchilla: [1]
    cells:                               # ... or/and explicit cells
      - {optimizer: adamw, scale: tiny-300k, chinchilla: 1,
         baseline_from: adamw/tiny-130k/1, tune: [lr]}      # start from another cell's best, tune only lr
      - {optimizer: adamw, scale: tiny-300k, chinchilla: 2, phase: 2}   # Phase II: re-tune the unstable ones
      - {optimizer: adamw, scale: tiny-520k, chinchilla: 1, phase: 3,   # Phase III: predict, run,
         ablation: true}                                                #   and ablate one at a time
    search:                              # per optimizer; default: the registry's space for the scale's family
      adamw:
        tune: [lr, wd, warmup, beta2]    # search only these; the others stay at their baseline
        grid: {lr: [3e-3, 6e-3, 1.2e-2]}
        baseline: {lr: 6e-3}
        fixed: {eps: 1e-15}
    strategy: coordinate_descent         # or tpe, random, cmaes, grid (Optuna samplers)
    tolerance: 3e-3                      # near-tie tolerance (PAPER.md section 4), or "auto" (below)
    confirm_seeds: 0                     # K more seeds for each converged cell's best and near-ties
    budget: 60                           # most trials per cell
    seeds: [0]
    resources: {cpu: 1, gpu: 0}          # per trial (fractions allowed)
    max_concurrent: 2
    divergence: {max_loss: 1e4, late_loss: null, late_step: 0}
    data: builtin
    executor: ray                        # or external: outside workers run the trials (sweep_service.external)
    custom_scales:                       # external only: your own scales, named freely, with their
      my-gpt-small: {params: 85000000}   #   non-embedding parameter count (speedups, /predict)

Phases (PAPER.md section 4). A cell is Phase I by default: coordinate descent from its baseline. A
`phase: 2` cell waits for its `from_cells` (default: every Phase I cell of its optimizer in the sweep), finds
the hyperparameters that are not stable over them (no value in the near-best set of every one of them), and
re-tunes only those, starting from the best config of `baseline_from` (default: the from-cell with the most
parameters, then the nearest Chinchilla multiple). A `phase: 3` cell waits for its `from_cells`, fits
h(N, C) = A x N^B x C^C' + D per hyperparameter over their best configs, and runs the prediction for its own
scale and multiple, snapped to the grid; with `ablation: true` it also runs one round of one-at-a-time
changes around the prediction (the neighbourhood, not a further descent).

Noise (sweep_service/noise.py). With `confirm_seeds: K` (0-100), a cell that has converged runs its best config
and its near-ties under K more seeds before it is marked converged, and its best is the lowest seed mean among
them. `tolerance: auto` (needs K >= 1) first runs the baseline config of the reference cell (the first Phase I
AdamW cell) under K more seeds and sets every cell's near-tie tolerance to max(3e-3, 2 x their std).

Validation (pydantic, at this edge) gives errors that name the field; `plan()` turns a valid spec into
plain frozen dataclasses that the engine runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sweep_service.coordinate_descent import TOLERANCE

STRATEGIES = ("coordinate_descent", "tpe", "random", "cmaes", "grid")
Value = float | int | bool | str


class SpecError(ValueError):
    """An invalid sweep spec; `errors` lists (field path, message)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{loc}: {msg}" for loc, msg in errors))


# Chinchilla multiples a sweep may use: the paper runs 1 to 16x (PAPER.md section 2) and the CPU demos
# 0.03x; outside [0.001, 1000] a run is either a few steps or years (issue 13: 1e308 was accepted).
MIN_MULTIPLE, MAX_MULTIPLE = 0.001, 1000.0
MULTIPLE_RANGE = f"multiples must be positive, finite and within [{MIN_MULTIPLE:g}, {MAX_MULTIPLE:g}]"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _multiple(value: float) -> float:
    if not MIN_MULTIPLE <= value <= MAX_MULTIPLE:  # also NaN, which compares false
        raise ValueError(f"{MULTIPLE_RANGE}, got {value:g}")
    return value


def _number(value: Any) -> Any:
    """YAML 1.1 reads 1e-3 (no dot) as a string; a hyperparameter that looks like a number is one."""
    if isinstance(value, str):
        for cast in (int, float):
            try:
                return cast(value)
            except ValueError:
                pass
    return value


def _numbers(values: Any) -> Any:
    if isinstance(values, dict):
        return {k: _numbers(v) for k, v in values.items()}
    if isinstance(values, list):
        return [_number(v) for v in values]
    return _number(values)


class SearchOverride(_Model):
    tune: list[str] | None = None
    grid: dict[str, list[Value]] = Field(default_factory=dict)
    baseline: dict[str, Value] = Field(default_factory=dict)
    fixed: dict[str, Value] = Field(default_factory=dict)

    _coerce = field_validator("grid", "baseline", "fixed", mode="before")(classmethod(lambda cls, v: _numbers(v)))


class CellSpec(_Model):
    optimizer: str
    scale: str
    chinchilla: float = Field(gt=0)
    baseline_from: str | None = None  # "optimizer/scale/chinchilla" of a cell in the same sweep
    tune: list[str] | None = None
    baseline: dict[str, Value] = Field(default_factory=dict)
    phase: Literal[1, 2, 3] = 1  # PAPER.md section 4; see the module docstring
    from_cells: list[str] | None = None  # Phase II/III: the cells judged or fitted (default: the optimizer's Phase I)
    ablation: bool = False  # Phase III: also one round of one-at-a-time changes around the prediction
    method: Literal["robust", "paper"] = "robust"  # Phase III: how the prediction is fitted (sweep_service/scaling.py)

    _coerce = field_validator("baseline", mode="before")(classmethod(lambda cls, v: _numbers(v)))
    _range = field_validator("chinchilla")(classmethod(lambda cls, v: _multiple(v)))


class Resources(_Model):
    cpu: float = Field(default=1, gt=0)
    gpu: float = Field(default=0, ge=0)


class CustomScale(_Model):
    """A scale of the user's own trainer (executor: external): N names it for the scaling-law fits, and `family`
    chooses which default search spaces its cells start from (workers/optimizers/base.py)."""

    params: int = Field(gt=0, description="non-embedding parameter count")
    family: Literal["tiny", "paper"] = "tiny"


class Divergence(_Model):
    max_loss: float = Field(default=1e4, gt=0)
    late_loss: float | None = None
    late_step: int = Field(default=0, ge=0)


class SweepSpec(_Model):
    name: str = Field(min_length=1, max_length=200)
    optimizers: list[str] = Field(default_factory=list)
    scales: list[str] = Field(default_factory=list)
    chinchilla: list[float] = Field(default_factory=lambda: [1.0])
    cells: list[CellSpec] = Field(default_factory=list)
    search: dict[str, SearchOverride] = Field(default_factory=dict)
    strategy: Literal["coordinate_descent", "tpe", "random", "cmaes", "grid"] = "coordinate_descent"
    tolerance: Annotated[float, Field(ge=0)] | Literal["auto"] = TOLERANCE
    confirm_seeds: int = Field(default=0, ge=0, le=100)
    budget: int = Field(default=100, ge=1, le=100_000)
    seeds: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(
        default_factory=lambda: [0], min_length=1, max_length=100
    )
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: int = Field(default=2, ge=1, le=10_000)
    divergence: Divergence = Field(default_factory=Divergence)
    data: str = "builtin"
    eval_every: int = Field(default=0, ge=0)
    executor: Literal["ray", "external"] = "ray"
    custom_scales: dict[str, CustomScale] = Field(default_factory=dict)

    @field_validator("chinchilla")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        for v in values:
            _multiple(v)
        return values

    @field_validator("tolerance", mode="before")
    @classmethod
    def _tolerance_number(cls, value: Any) -> Any:
        # One message for the field, not one per member of the union (pydantic's "constrained-float" and
        # "literal['auto']" errors name its internals).
        if value == "auto":
            return value
        number = _number(value)
        try:  # float(): an int too large for one (YAML's 10**400) overflows
            ok = not isinstance(number, bool) and isinstance(number, int | float) and 0 <= float(number) < math.inf
        except OverflowError:
            ok = False
        if not ok:
            raise ValueError(f"a finite number >= 0 (the paper's 3e-3) or `auto`, not {repr(value)[:40]}")
        return number

    @model_validator(mode="after")
    def _has_cells(self) -> SweepSpec:
        if not self.cells and not (self.optimizers and self.scales):
            raise ValueError("give `optimizers` and `scales` (with `chinchilla`), or a `cells` list")
        return self

    @model_validator(mode="after")
    def _custom_scales_are_external(self) -> SweepSpec:
        if self.custom_scales and self.executor != "external":
            raise ValueError("custom_scales need `executor: external` (our trainer knows only the catalog's scales)")
        return self


@dataclass(frozen=True)
class Space:
    grid: dict[str, tuple[Value, ...]]
    baseline: dict[str, Value]
    fixed: dict[str, Value] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"grid": {k: list(v) for k, v in self.grid.items()}, "baseline": self.baseline, "fixed": self.fixed}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Space:
        return Space({k: tuple(v) for k, v in d["grid"].items()}, dict(d["baseline"]), dict(d.get("fixed", {})))


@dataclass(frozen=True)
class CellPlan:
    key: str
    optimizer: str
    scale: str
    chinchilla: float
    space: Space
    baseline_from: str | None = None
    phase: int = 1
    from_cells: tuple[str, ...] = ()
    ablation: bool = False
    method: str = "robust"  # Phase III fit method (sweep_service/scaling.py)


@dataclass(frozen=True)
class SweepPlan:
    name: str
    cells: tuple[CellPlan, ...]
    strategy: str
    tolerance: float
    budget: int
    seeds: tuple[int, ...]
    cpu: float
    gpu: float
    max_concurrent: int
    max_loss: float
    late_loss: float | None
    late_step: int
    data: str
    eval_every: int
    confirm_seeds: int = 0
    tolerance_auto: bool = False  # `tolerance: auto`: `tolerance` is the floor until the seed noise is measured
    executor: str = "ray"
    scale_params: dict[str, int] = field(default_factory=dict)  # custom scales' non-embedding parameter counts


def cell_key(optimizer: str, scale: str, chinchilla: float) -> str:
    return f"{optimizer}/{scale}/{chinchilla:g}"


def _one_line(exc: Exception) -> str:
    """PyYAML's messages span lines (a context, the offending line, a caret): keep the problem and where."""
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem and mark is not None:
        return f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON spec file into a dict (errors name the file)."""
    p = Path(path)
    if not p.exists():
        raise SpecError([(str(p), "file not found")])
    if p.is_dir():
        raise SpecError([(str(p), "is a directory, not a spec file (e.g. examples/quickstart.yaml)")])
    try:
        text = p.read_text()
        doc = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except OSError as exc:  # e.g. no permission to read it
        raise SpecError([(str(p), f"cannot read: {exc.strerror or exc}")]) from None
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError([(str(p), f"not valid YAML/JSON: {_one_line(exc)}")]) from None
    if not isinstance(doc, dict):
        raise SpecError([(str(p), "a sweep spec is a mapping (name, optimizers, scales, ...)")])
    return doc


def parse_spec(doc: dict[str, Any]) -> SweepSpec:
    try:
        return SweepSpec.model_validate(doc)
    except ValidationError as exc:
        raise SpecError(
            [
                (".".join(str(p) for p in e["loc"]) or "spec", e["msg"].removeprefix("Value error, "))
                for e in exc.errors()
            ]
        ) from None


def _space_for(
    optimizer: str,
    scale: str,
    override: SearchOverride | None,
    cell: CellSpec | None,
    custom: dict[str, CustomScale] | None = None,
) -> Space:
    # Catalog imports (torch) happen here, not at module import, so the API can validate cheaply.
    from workers.model import SCALES
    from workers.optimizers import REGISTRY, resolve_hparams

    spec = REGISTRY[optimizer]
    family = SCALES[scale].family if scale in SCALES else (custom or {})[scale].family
    default = spec.spaces[family]
    resolved = resolve_hparams(spec, family)
    grid: dict[str, tuple[Value, ...]] = {k: tuple(v) for k, v in default.grid.items()}
    baseline: dict[str, Value] = dict(default.baseline)
    fixed: dict[str, Value] = dict(default.fixed)
    names = set(resolved)
    tune: list[str] | None = None
    where = f"search.{optimizer}"
    if override is not None:
        for section in (override.grid, override.baseline, override.fixed):
            unknown = sorted(set(section) - names)
            if unknown:
                raise SpecError([(where, f"unknown hyperparameters {unknown} for {optimizer}; valid: {sorted(names)}")])
        # Each value must have its hyperparameter's type (the trainer's check, workers.optimizers.base), so that a
        # wrong one is a 422 now rather than every trial failing later.
        typed = [(f"grid.{k}", k, v) for k, values in override.grid.items() for v in values]
        typed += [
            (f"{section}.{k}", k, v) for section in ("baseline", "fixed") for k, v in getattr(override, section).items()
        ]
        _check_types(where, typed, resolved)
        for k, values in override.grid.items():
            if not values:
                raise SpecError([(f"{where}.grid.{k}", "a grid needs at least one value")])
            grid[k] = tuple(values)
            fixed.pop(k, None)
        baseline.update(override.baseline)
        for k, v in override.fixed.items():
            fixed[k] = v
            grid.pop(k, None)
            baseline.pop(k, None)
        tune = override.tune
    if cell is not None:
        unknown = sorted(set(cell.baseline) - names)
        if unknown:
            raise SpecError(
                [("baseline", f"unknown hyperparameters {unknown} for {optimizer}; valid: {sorted(names)}")]
            )
        typed = [(f"baseline.{k}", k, v) for k, v in cell.baseline.items()]
        _check_types("", typed, resolved)
        baseline.update(cell.baseline)
        if cell.tune is not None:
            tune = cell.tune
    if tune is not None:
        unknown = sorted(set(tune) - set(grid))
        if unknown:
            raise SpecError([(f"{where}.tune", f"{unknown} have no grid; searchable: {sorted(grid)}")])
        for k in list(grid):
            if k not in tune:
                # Not tuned: held at its baseline value.
                fixed[k] = baseline.get(k, resolved[k])
                del grid[k]
    for k in grid:
        if k not in baseline:
            baseline[k] = resolved[k]
        if baseline[k] not in grid[k]:
            raise SpecError([(f"{where}.baseline.{k}", f"baseline {baseline[k]!r} is not in the grid {list(grid[k])}")])
    baseline = {k: v for k, v in baseline.items() if k in grid}
    return Space(grid, baseline, fixed)


def _check_types(where: str, typed: list[tuple[str, str, Any]], resolved: dict[str, Any]) -> None:
    """SpecError naming every (location, hyperparameter, value) whose value has the wrong type for its default."""
    from workers.optimizers.base import HParamTypeError, check_hparam_type  # torch: not at module import

    errors = []
    for loc, name, value in typed:
        try:
            check_hparam_type(name, value, resolved[name])
        except HParamTypeError as exc:
            errors.append((f"{where}.{loc}" if where else loc, str(exc)))
    if errors:
        raise SpecError(errors)


def plan(spec: SweepSpec, max_cells: int | None = None) -> SweepPlan:
    """Expand a valid spec into cells with resolved search spaces; unknown names list the valid ones.

    A cell none of whose configs can run (every warmup >= its steps) is refused. With `max_cells`
    (SWEEP_MAX_CELLS; the submission paths pass it), a spec with more cells is refused before any space is built.
    """
    from sweep_service import feasibility
    from workers.model import SCALES
    from workers.optimizers import REGISTRY

    errors: list[tuple[str, str]] = []
    if max_cells is not None:
        explicit = (cell_key(c.optimizer, c.scale, c.chinchilla) for c in spec.cells)
        too_many = feasibility.cell_count_problem(spec.optimizers, spec.scales, spec.chinchilla, explicit, max_cells)
        if too_many is not None:
            raise SpecError([too_many])
    for i, name in enumerate(spec.optimizers):
        if name not in REGISTRY:
            errors.append((f"optimizers.{i}", f"unknown optimizer {name!r}; valid: {', '.join(REGISTRY)}"))
    known = {*SCALES, *spec.custom_scales}
    for name in spec.custom_scales:
        if name in SCALES:
            errors.append((f"custom_scales.{name}", f"{name!r} is a catalog scale; name your own scale differently"))
    for i, name in enumerate(spec.scales):
        if name not in known:
            errors.append((f"scales.{i}", f"unknown scale {name!r}; valid: {', '.join(SCALES)}"))
    for i, c in enumerate(spec.cells):
        if c.optimizer not in REGISTRY:
            errors.append((f"cells.{i}.optimizer", f"unknown optimizer {c.optimizer!r}; valid: {', '.join(REGISTRY)}"))
        if c.scale not in known:
            errors.append((f"cells.{i}.scale", f"unknown scale {c.scale!r}; valid: {', '.join(SCALES)}"))
    for name in spec.search:
        if name not in REGISTRY:
            errors.append((f"search.{name}", f"unknown optimizer {name!r}; valid: {', '.join(REGISTRY)}"))
    if errors:
        raise SpecError(errors)

    cells: dict[str, CellPlan] = {}
    for optimizer in spec.optimizers:
        for scale in spec.scales:
            for multiple in spec.chinchilla:
                key = cell_key(optimizer, scale, multiple)
                space = _space_for(optimizer, scale, spec.search.get(optimizer), None, spec.custom_scales)
                cells[key] = CellPlan(key, optimizer, scale, multiple, space)
    for i, c in enumerate(spec.cells):
        key = cell_key(c.optimizer, c.scale, c.chinchilla)
        try:
            space = _space_for(c.optimizer, c.scale, spec.search.get(c.optimizer), c, spec.custom_scales)
        except SpecError as exc:
            # An error in the spec's `search` section is named there; one in the cell's own fields under the cell.
            raise SpecError(
                [(loc if loc.startswith("search.") else f"cells.{i}.{loc}", msg) for loc, msg in exc.errors]
            ) from None
        cells[key] = CellPlan(
            key, c.optimizer, c.scale, c.chinchilla, space, c.baseline_from, c.phase, (), c.ablation, c.method
        )
    for i, c in enumerate(spec.cells):
        key = cell_key(c.optimizer, c.scale, c.chinchilla)
        if c.baseline_from is not None and c.baseline_from not in cells:
            errors.append((f"cells.{i}.baseline_from", f"no cell {c.baseline_from!r}; cells: {sorted(cells)}"))
        if c.baseline_from == key:
            errors.append((f"cells.{i}.baseline_from", "a cell cannot start from its own best"))
        errors.extend(_phase_errors(i, c, key, cells))
        if c.phase != 1 and not any(loc.startswith(f"cells.{i}.") for loc, _ in errors):
            sources = c.from_cells if c.from_cells is not None else _phase_one_cells(c.optimizer, key, cells)
            cells[key] = dataclasses.replace(cells[key], from_cells=tuple(sources))
    if spec.tolerance == "auto" and spec.confirm_seeds < 1:
        errors.append(("tolerance", "`auto` measures the seed noise: it needs confirm_seeds >= 1"))
    index = {cell_key(c.optimizer, c.scale, c.chinchilla): i for i, c in enumerate(spec.cells)}
    for key, cell in cells.items():
        if cell.scale in spec.custom_scales:
            continue  # an outside trainer's own scale: its step count is the trainer's, unknown here
        problem = feasibility.warmup_problem(cell)
        if problem is not None:
            errors.append((f"cells.{index[key]}.chinchilla" if key in index else "chinchilla", problem))
    if errors:
        raise SpecError(errors)
    auto = spec.tolerance == "auto"
    return SweepPlan(
        name=spec.name,
        cells=tuple(cells.values()),
        strategy=spec.strategy,
        tolerance=TOLERANCE if auto else float(spec.tolerance),
        budget=spec.budget,
        seeds=tuple(spec.seeds),
        cpu=spec.resources.cpu,
        gpu=spec.resources.gpu,
        max_concurrent=spec.max_concurrent,
        max_loss=spec.divergence.max_loss,
        late_loss=spec.divergence.late_loss,
        late_step=spec.divergence.late_step,
        data=spec.data,
        eval_every=spec.eval_every,
        confirm_seeds=spec.confirm_seeds,
        tolerance_auto=auto,
        executor=spec.executor,
        scale_params={name: s.params for name, s in spec.custom_scales.items()},
    )


def _phase_one_cells(optimizer: str, key: str, cells: dict[str, CellPlan]) -> list[str]:
    return [k for k, c in cells.items() if c.optimizer == optimizer and c.phase == 1 and k != key]


def _phase_errors(i: int, c: CellSpec, key: str, cells: dict[str, CellPlan]) -> list[tuple[str, str]]:
    """Phase II/III cells need Phase I cells of their own optimizer to learn from, and no `tune` of their own."""
    where = f"cells.{i}"
    if c.phase == 1:
        if c.from_cells is not None:
            return [(f"{where}.from_cells", "only a phase 2 or 3 cell learns from other cells")]
        if c.ablation:
            return [(f"{where}.ablation", "only a phase 3 cell has an ablation")]
        return []
    errors: list[tuple[str, str]] = []
    if c.tune is not None:
        errors.append((f"{where}.tune", f"a phase {c.phase} cell chooses what to tune itself; drop `tune`"))
    if c.ablation and c.phase != 3:
        errors.append((f"{where}.ablation", "only a phase 3 cell has an ablation"))
    if c.phase == 3 and c.baseline_from is not None:
        errors.append((f"{where}.baseline_from", "a phase 3 cell starts from its prediction"))
    sources = c.from_cells if c.from_cells is not None else _phase_one_cells(c.optimizer, key, cells)
    for j, source in enumerate(sources):
        other = cells.get(source)
        if other is None:
            errors.append((f"{where}.from_cells.{j}", f"no cell {source!r}; cells: {sorted(cells)}"))
        elif source == key:
            errors.append((f"{where}.from_cells.{j}", "a cell cannot learn from itself"))
        elif other.optimizer != c.optimizer or other.phase != 1:
            errors.append((f"{where}.from_cells.{j}", f"{source!r} is not a phase 1 cell of {c.optimizer}"))
    if not sources:
        errors.append((f"{where}.from_cells", f"no phase 1 cell of {c.optimizer} in the sweep to learn from"))
    return errors


def plan_document(doc: dict[str, Any], max_cells: int | None = None) -> SweepPlan:
    return plan(parse_spec(doc), max_cells)
