"""The paper's Phase I search: coordinate descent over a grid (PAPER.md section 4), with no Ray or torch.

`propose(space, baseline, history, tolerance)` is a pure function of a cell's recorded history, so a
dispatcher that restarts recomputes the same next step from its database (DESIGN.md). One call:

1. The *neighbourhood* of a config c is c plus every config that changes exactly one searched
   hyperparameter to another value of its grid (all other values, not only the adjacent ones: Marin's
   `create_configs`).
2. While the baseline (the start config) is not finished, the centre is the baseline. Otherwise the best is
   the finished run with the lowest loss; the *near-ties* are the finished runs within `tolerance` of it;
   the centre is the near-tie whose neighbourhood needs the fewest new runs (ties: lower loss, then grid
   order).
3. `configs` is every member of the centre's neighbourhood that is not finished, not in flight and not
   pruned by the warmup rule, all at once (the paper runs a whole neighbourhood in parallel), in grid order.
4. `converged` is True when the centre's whole neighbourhood is finished (or pruned). The centre is a
   near-tie by construction, which is the paper's stopping rule (PAPER.md section 4 step 4).

Finished runs and divergence: `history` holds (config, final loss) for finished runs only. NaN, +inf and a
loss above `divergence_threshold` (1e4) rank as +inf: finished, never best (PAPER.md section 4 step 2).
The paper's other divergence rule (loss >= 6 after >= 2000 steps) needs the loss curve, so the caller
applies it and records +inf. A config that appears twice counts once, with its lower loss.

Rounds: the paper waits for a whole neighbourhood before choosing the next centre (Marin re-ran its script
after each batch of runs finished). Call `propose` when the previous proposal's runs have all finished
and you get exactly that. A caller that wants to start work earlier passes the runs in flight as
`pending`: they are never proposed again and still count as unfinished.

Warmup pruning (PAPER.md section 2): a config whose `warmup` is not less than its number of training steps
is never proposed and needs no run. Steps come from `steps_for(config)` (steps depend on the batch size)
or a constant `max_steps`. The issue's contract drops warmup == steps too; Marin's `create_configs` keeps
a config with warmup == steps.

Departure from Marin's script: it switched to the near-tie with the fewest new runs only when that saved at
least 10 runs; PAPER.md section 4 step 3 states the plain preference, which is what this module does.

`CoordinateDescentSampler` runs the same algorithm as an Optuna sampler on any objective, and
`run_to_convergence` runs it sequentially on a Python function (tests, benches).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from db import models

HParam = float | int | bool | str
Config = dict[str, HParam]

TOLERANCE = 3e-3  # PAPER.md section 4 step 3 (Marin optimizer_sweep: thshold = 3e-3)
DIVERGENCE_THRESHOLD = 1e4  # PAPER.md section 4 step 2 (Marin optimizer_sweep `bad_number`: loss > 10000)
WARMUP_KEY = "warmup"  # the trainer's warmup-steps hyperparameter (workers.optimizers.base.TRAINER_DEFAULTS)
# Two numbers closer than this (relative) are the same grid value: a value that went through float32 or
# decimal text (JSON, a database) still matches. The closest grid values in PAPER.md section 3 (beta2 0.99
# and 0.995) are 5e-3 apart, far above it.
SAME_VALUE_RTOL = 1e-6
# near_tie's float slack: a gap this close (relative) to the tolerance counts as equal to it. Ten orders of magnitude
# above float64's resolution (2e-16) and ten below any loss difference that means something.
NEAR_TIE_RTOL = 1e-9


class GridSpace(Protocol):
    """What `propose` reads from a search space; `workers.optimizers.base.SearchSpace` satisfies it.

    Declared here so this module does not import torch (workers.optimizers.base does).
    """

    @property
    def grid(self) -> Mapping[str, Sequence[HParam]]: ...

    @property
    def baseline(self) -> Mapping[str, HParam]: ...

    @property
    def fixed(self) -> Mapping[str, HParam]: ...


@dataclass(frozen=True)
class Proposal:
    """One step of coordinate descent for one cell. Configs hold every searched name, then the fixed values."""

    configs: list[Config]  # to start now: none finished, none in flight, none pruned; grid order
    converged: bool  # the centre's whole neighbourhood is finished (or pruned)
    best: Config | None  # the finished run with the lowest finite loss (None: nothing finite yet)
    best_loss: float  # +inf when `best` is None
    near_ties: list[Config]  # finished runs within tolerance of best_loss, by loss then grid order
    center: Config  # the config whose neighbourhood is being completed
    center_loss: float  # +inf while the centre is unfinished (or if it diverged)
    remaining: int  # members of the centre's neighbourhood still to finish (proposed now + in flight)
    pruned: list[Config]  # members of the centre's neighbourhood skipped by the warmup rule


@dataclass(frozen=True)
class _OffGrid:
    """A value from the history or the baseline that matches no grid value; such runs still count."""

    kind: str
    norm: Any  # hashable normalised value: 128 and 128.0 compare equal, True and 1 do not
    value: HParam = field(compare=False)


_Coord = int | _OffGrid  # an index into the hyperparameter's grid, or an off-grid value
_Point = tuple[_Coord, ...]  # one coordinate per searched hyperparameter, in grid order
_SortKey = tuple[tuple[int, int, str, str], ...]


def _same_value(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, numbers.Real) and isinstance(b, numbers.Real):
        x, y = float(a), float(b)
        return x == y or math.isclose(x, y, rel_tol=SAME_VALUE_RTOL)
    return type(a) is type(b) and a == b


def _off_grid(value: HParam) -> _OffGrid:
    if isinstance(value, bool):
        return _OffGrid("bool", value, value)
    if isinstance(value, numbers.Real):
        return _OffGrid("real", float(value), value)
    if isinstance(value, str):
        return _OffGrid("str", value, value)
    return _OffGrid(type(value).__name__, repr(value), value)


class _Lattice:
    """The grid as integer coordinates: matching configs to points, neighbourhoods and grid order."""

    def __init__(self, space: GridSpace) -> None:
        self.names = tuple(space.grid)
        self.values = {name: tuple(space.grid[name]) for name in self.names}
        self.fixed = dict(space.fixed)
        if not self.names:
            raise ValueError("search space: the grid is empty; there is nothing to search")
        for name, values in self.values.items():
            if not values:
                raise ValueError(f"search space: grid of {name!r} has no values")
            for i, a in enumerate(values):
                for b in values[i + 1 :]:
                    if _same_value(a, b):
                        raise ValueError(f"search space: grid of {name!r} repeats the value {a!r} (or one within 1e-6)")

    def point(self, config: Mapping[str, Any], what: str) -> _Point:
        missing = [name for name in self.names if name not in config]
        if missing:
            raise ValueError(f"{what} lacks searched hyperparameters {missing}; it has {sorted(config)}")
        return tuple(self._coord(name, config[name]) for name in self.names)

    def _coord(self, name: str, value: HParam) -> _Coord:
        for i, grid_value in enumerate(self.values[name]):
            if _same_value(value, grid_value):
                return i
        return _off_grid(value)

    def config(self, point: _Point) -> Config:
        searched: Config = {}
        for name, coord in zip(self.names, point, strict=True):
            searched[name] = coord.value if isinstance(coord, _OffGrid) else self.values[name][coord]
        return {**searched, **self.fixed}

    def neighbourhood(self, center: _Point) -> list[_Point]:
        """The centre, then each one-hyperparameter change, hyperparameters and values in grid order."""
        points = [center]
        for axis, name in enumerate(self.names):
            for i in range(len(self.values[name])):
                if center[axis] != i:
                    points.append((*center[:axis], i, *center[axis + 1 :]))
        return points

    @staticmethod
    def order(point: _Point) -> _SortKey:
        """Grid order: by grid index, hyperparameters in grid order; off-grid values after the grid's."""
        return tuple((1, 0, c.kind, repr(c.norm)) if isinstance(c, _OffGrid) else (0, c, "", "") for c in point)


def ranking_loss(loss: float | None, divergence_threshold: float = DIVERGENCE_THRESHOLD) -> float:
    """The loss used to rank a finished run: NaN, None, +-inf and losses above the threshold become +inf."""
    if loss is None:
        return math.inf
    value = float(loss)
    if not math.isfinite(value) or value > divergence_threshold:
        return math.inf
    return value


def near_tie(loss: float, best_loss: float, tolerance: float) -> bool:
    """Whether `loss` is within `tolerance` of `best_loss`: the one near-tie rule (PAPER.md section 4 step 3),
    used by the descent, the analysis, seed confirmation and imports alike (issue 15).

    Inclusive, with float slack: 3.532 is a near-tie of 3.529 at tolerance 3e-3 though 3.532 - 3.529 rounds to
    3.0000000000000001e-3, so a loss written with the tolerance's own digits is in. False when either loss is
    +inf or NaN (a diverged run is never a near-tie; an infinite best has none)."""
    if not (math.isfinite(loss) and math.isfinite(best_loss)):
        return False
    gap = loss - best_loss
    return gap <= tolerance or math.isclose(gap, tolerance, rel_tol=NEAR_TIE_RTOL)


def propose(
    space: GridSpace,
    baseline: Mapping[str, Any] | None = None,
    history: Iterable[tuple[Mapping[str, Any], float]] = (),
    tolerance: float = TOLERANCE,
    *,
    pending: Iterable[Mapping[str, Any]] = (),
    steps_for: Callable[[Config], int] | None = None,
    max_steps: int | None = None,
    warmup_key: str = WARMUP_KEY,
    divergence_threshold: float = DIVERGENCE_THRESHOLD,
) -> Proposal:
    """The configs to run now, whether the cell has converged, and the current best (see the module doc).

    Args:
        space: grid (name -> ordered values), baseline and fixed values; `SearchSpace` or anything alike.
        baseline: the start config (a cell may start from another cell's best); None: `space.baseline`.
            Extra names are ignored; every searched name must be present.
        history: (config, final loss) per finished run; +inf (or NaN, or > divergence_threshold) = diverged.
            Configs are matched on the searched names only (fixed and extra names are ignored), numbers
            with a relative tolerance of 1e-6, so 128.0 is 128 and float32(0.1) is 0.1.
        tolerance: near-tie tolerance on the loss (PAPER.md section 4 step 3: 3e-3).
        pending: configs started and not finished: never proposed, still unfinished.
        steps_for: number of training steps of a config (for the warmup rule); or give `max_steps`.
        max_steps: the same number of steps for every config.
        warmup_key: the name of the warmup hyperparameter (searched or fixed); a config without it is kept.
        divergence_threshold: a final loss above it is a diverged run (PAPER.md section 4 step 2: 1e4).

    Deterministic: the same space and the same history (in any order) give the same proposal.
    """
    if steps_for is not None and max_steps is not None:
        raise ValueError("give steps_for or max_steps, not both")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    lattice = _Lattice(space)
    start = lattice.point(space.baseline if baseline is None else baseline, "baseline")

    losses: dict[_Point, float] = {}
    for config, loss in history:
        point = lattice.point(config, f"history config {dict(config)!r}")
        losses[point] = min(losses.get(point, math.inf), ranking_loss(loss, divergence_threshold))
    in_flight = {lattice.point(config, f"pending config {dict(config)!r}") for config in pending}

    def is_pruned(point: _Point) -> bool:
        config = lattice.config(point)
        warmup = config.get(warmup_key)
        if warmup is None:
            return False
        steps = steps_for(config) if steps_for is not None else max_steps
        # Not less than: a run whose warmup takes all its steps never reaches its peak and decay (issue text).
        return steps is not None and float(warmup) >= steps

    def unfinished(center: _Point) -> list[_Point]:
        return [p for p in lattice.neighbourhood(center) if p not in losses and not is_pruned(p)]

    ranked = sorted(
        ((loss, lattice.order(p), p) for p, loss in losses.items() if math.isfinite(loss)),
        key=lambda item: (item[0], item[1]),
    )
    best_loss = ranked[0][0] if ranked else math.inf
    near = [p for loss, _, p in ranked if near_tie(loss, best_loss, tolerance)]

    baseline_open = start not in losses and not is_pruned(start)
    if baseline_open or not near:
        center = start
    else:
        # Fewest new runs, then lower loss, then grid order (PAPER.md section 4 step 3).
        center = min(near, key=lambda p: (len(unfinished(p)), losses[p], lattice.order(p)))

    todo = unfinished(center)
    return Proposal(
        configs=[lattice.config(p) for p in todo if p not in in_flight],
        converged=not todo,
        best=lattice.config(ranked[0][2]) if ranked else None,
        best_loss=best_loss,
        near_ties=[lattice.config(p) for p in near],
        center=lattice.config(center),
        center_loss=losses.get(center, math.inf),
        remaining=len(todo),
        pruned=[lattice.config(p) for p in lattice.neighbourhood(center) if p not in losses and is_pruned(p)],
    )


def config_key(space: GridSpace, config: Mapping[str, Any]) -> str:
    """The key of the run `propose` sees in `config`: db.models.config_key (the one identity rule) of the config
    with its searched values matched to their grid values (within SAME_VALUE_RTOL) and the space's fixed values."""
    lattice = _Lattice(space)
    return models.config_key(lattice.config(lattice.point(config, "config")))


@dataclass(frozen=True)
class Descent:
    """What `run_to_convergence` did: every run in the order it ran, and the last proposal."""

    history: list[tuple[Config, float]]
    proposal: Proposal
    rounds: int  # neighbourhoods run (one `propose` call each)


def run_to_convergence(
    space: GridSpace,
    baseline: Mapping[str, Any] | None,
    objective: Callable[[Config], float],
    tolerance: float = TOLERANCE,
    max_trials: int = 10_000,
    **options: Any,
) -> Descent:
    """Coordinate descent on `objective(config) -> final loss`, one synchronous round at a time.

    Stops at convergence or after `max_trials` runs. `options` go to `propose` (steps_for, max_steps, ...).
    """
    history: list[tuple[Config, float]] = []
    rounds = 0
    while True:
        proposal = propose(space, baseline, history, tolerance, **options)
        if proposal.converged or not proposal.configs or len(history) >= max_trials:
            return Descent(history=history, proposal=proposal, rounds=rounds)
        rounds += 1
        for config in proposal.configs:
            if len(history) >= max_trials:
                break
            history.append((config, float(objective(config))))


def suggest_config(trial: optuna.trial.BaseTrial, space: GridSpace) -> Config:
    """Suggest every searched hyperparameter as a categorical over its grid, then add the fixed values.

    The objective of a study run by `CoordinateDescentSampler` should call this (or suggest the same
    categoricals itself: Optuna rejects a different list of choices for the same name).
    """
    config: Config = {}
    for name, values in space.grid.items():
        value = trial.suggest_categorical(name, tuple(values))
        if value is None:
            raise ValueError(f"search space: {name!r} has None in its grid")
        config[name] = value
    return {**config, **dict(space.fixed)}


class CoordinateDescentSampler(optuna.samplers.BaseSampler):
    """The paper's coordinate descent as an Optuna sampler (single objective, minimised).

    Every searched hyperparameter is a categorical over its grid values (use `suggest_config`). The sampler
    reads the study's trials: COMPLETE ones with their value, FAIL and PRUNED ones as diverged (+inf, so a
    config whose objective returns NaN or raises is finished and never proposed again), RUNNING and WAITING
    ones as in flight. It hands out a whole proposal (one neighbourhood) one trial at a time, in grid order,
    and asks `propose` again only when that round is used up, so sequential `optimize` runs the same trials
    in the same order as `run_to_convergence`. With parallel workers, a worker that finds the round used up
    while runs are in flight starts the current best near-tie's unfinished neighbours (`pending`).

    Convergence: after each trial the sampler re-checks; when converged, `converged` becomes True and, if
    `stop_when_converged`, it calls `study.stop()` inside `optimize`, so no further trial starts (with
    ask/tell, read `converged` yourself). A trial that starts when there is nothing to run (converged, or
    every remaining run in flight) is sampled by `fallback` (default: `RandomSampler(seed=0)` over the same
    categoricals), and such a trial then calls `study.stop()` when converged.
    """

    def __init__(
        self,
        space: GridSpace,
        baseline: Mapping[str, Any] | None = None,
        tolerance: float = TOLERANCE,
        *,
        steps_for: Callable[[Config], int] | None = None,
        max_steps: int | None = None,
        warmup_key: str = WARMUP_KEY,
        divergence_threshold: float = DIVERGENCE_THRESHOLD,
        fallback: optuna.samplers.BaseSampler | None = None,
        stop_when_converged: bool = True,
    ) -> None:
        self._space = space
        self._lattice = _Lattice(space)
        self._baseline = dict(space.baseline if baseline is None else baseline)
        self._lattice.point(self._baseline, "baseline")  # fail early on a bad baseline
        self._tolerance = tolerance
        self._options: dict[str, Any] = {
            "steps_for": steps_for,
            "max_steps": max_steps,
            "warmup_key": warmup_key,
            "divergence_threshold": divergence_threshold,
        }
        self._fallback = fallback if fallback is not None else optuna.samplers.RandomSampler(seed=0)
        self._stop_when_converged = stop_when_converged
        self._round: list[Config] = []  # the rest of the current proposal, not yet handed out
        self._handed: dict[int, Config] = {}  # trial number -> config this sampler gave it
        self._proposal: Proposal | None = None
        self._converged = False
        self._lock = threading.RLock()  # optimize(n_jobs > 1) calls the sampler from several threads

    @property
    def converged(self) -> bool:
        """True once a round is used up and the centre's whole neighbourhood has finished."""
        return self._converged

    @property
    def proposal(self) -> Proposal | None:
        """The last proposal computed (best, near-ties, centre, ...); None before the first trial."""
        return self._proposal

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {name: CategoricalDistribution(tuple(values)) for name, values in self._space.grid.items()}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        _check_minimize(study)
        with self._lock:
            history, pending = self._read(study, exclude=trial.number)
            config = self._next(history, pending)
            if config is None:
                if self.converged:
                    self._stop(study)
                return {}  # every parameter goes to sample_independent, i.e. the fallback sampler
            self._handed[trial.number] = config
        return {name: config[name] for name in search_space if name in config}

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._fallback.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self._fallback.after_trial(study, trial, state, values)
        with self._lock:
            # Optuna calls this before it stores the trial's state, so add the trial by hand.
            history, pending = self._read(study, exclude=trial.number)
            config = self._config_of(trial)
            if config is not None:
                loss = values[0] if state == TrialState.COMPLETE and values else math.inf
                history.append((config, loss))
            taken = self._taken(history, pending)
            self._round = [c for c in self._round if self._lattice.point(c, "config") not in taken]
            if self._round:
                return  # the paper decides only once the whole neighbourhood has run
            self._proposal = propose(
                self._space, self._baseline, history, self._tolerance, pending=pending, **self._options
            )
            self._converged = self._proposal.converged
            if self._converged:
                self._stop(study)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()

    def _config_of(self, trial: FrozenTrial) -> Config | None:
        config = {**self._handed.get(trial.number, {}), **trial.params}
        return config if all(name in config for name in self._lattice.names) else None

    def _read(self, study: Study, exclude: int) -> tuple[list[tuple[Config, float]], list[Config]]:
        history: list[tuple[Config, float]] = []
        pending: list[Config] = []
        for t in study.get_trials(deepcopy=False):
            config = self._config_of(t)
            if t.number == exclude or config is None:
                continue  # a trial that has not chosen all searched values yet is not a point of the grid
            if t.state == TrialState.COMPLETE:
                history.append((config, t.value if t.value is not None else math.inf))
            elif t.state in (TrialState.FAIL, TrialState.PRUNED):
                history.append((config, math.inf))
            else:
                pending.append(config)
        return history, pending

    def _taken(self, history: list[tuple[Config, float]], pending: list[Config]) -> set[tuple[Any, ...]]:
        return {self._lattice.point(c, "config") for c in [*(c for c, _ in history), *pending]}

    def _next(self, history: list[tuple[Config, float]], pending: list[Config]) -> Config | None:
        taken = self._taken(history, pending)
        while self._round:
            config = self._round.pop(0)
            if self._lattice.point(config, "config") not in taken:
                return config
        self._proposal = propose(
            self._space, self._baseline, history, self._tolerance, pending=pending, **self._options
        )
        self._converged = self._proposal.converged
        if not self._proposal.configs:
            return None
        self._round = self._proposal.configs[1:]
        return self._proposal.configs[0]

    def _stop(self, study: Study) -> None:
        if not self._stop_when_converged:
            return
        # study.stop() raises outside optimize() (ask/tell); that caller reads `converged` instead.
        with contextlib.suppress(RuntimeError):
            study.stop()


def _check_minimize(study: Study) -> None:
    if len(study.directions) != 1 or study.directions[0] != StudyDirection.MINIMIZE:
        raise ValueError("CoordinateDescentSampler needs a single-objective study that minimises the loss")
