"""The `Proposer` contract: what decides a cell's next configs, and the registry the engine asks by strategy name.

A proposer is the algorithm of a sweep's `strategy` (DESIGN.md "proposer"): coordinate descent (the paper's) or
an Optuna sampler. The engine (sweep_service/engine.py) owns everything else about a cell (its rows, seeds,
phases, noise, confirmation seeds, the lease) and asks the proposer one question, as often as it likes:
"here is the cell's recorded history; what runs next?". Implementations live one per module in this package
and register themselves in `REGISTRY` under their strategy name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import optuna

from sweep_service.spec import Space

Config = dict[str, Any]  # searched names only (no fixed values), as the engine stores them under a trial


@dataclass(frozen=True)
class CellHistory:
    """A cell as the engine recorded it, seen by a proposer. Built from the database on every call.

    `finished` holds one entry per searched config whose every seed has finished: the mean final loss over its
    seeds, or +inf when any seed diverged or failed (a diverged run is a result, never dropped). `pending`
    holds the searched configs with a seed still pending or running. A config is in exactly one of the two.
    Both are in trial-id order (the order the configs were first proposed).
    """

    space: Space
    finished: list[tuple[Config, float]]
    pending: list[Config]
    round: int  # the cell's last round: the round of the configs proposed last (0 before any)


@dataclass(frozen=True)
class Limits:
    """What the sweep allows a cell and what a proposer may need from the engine.

    `study` opens the cell's Optuna study (RDB storage in the sweep's database). Calling it ends the caller's
    write transaction first (SQLite has a single writer and Optuna writes through its own connection), so a
    proposer calls it only when it needs the study, after every early return.
    """

    tolerance: float  # near-tie tolerance on the loss (PAPER.md section 4 step 3)
    budget: int  # most configs (not trials: each config runs under every seed) the cell may propose
    max_concurrent: int  # the sweep's concurrent trials
    max_rounds: int | None  # most rounds (a Phase III ablation runs one); None: unbounded
    seed: int  # a per-cell seed (the sweep's first seed + the cell's id): deterministic across restarts
    steps_for: Callable[[Config], int]  # a config's training steps (coordinate descent's warmup rule)
    study: Callable[[], optuna.Study]


@dataclass(frozen=True)
class Suggestion:
    """One config to run: its searched values, and the Optuna trial asked for it (None: not asked, mirrored later)."""

    config: Config
    optuna_trial: int | None = None


@dataclass(frozen=True)
class Step:
    """A proposer's answer for one cell.

    `best`, `best_loss` and `near_ties` summarise `finished` (the engine records them on the cell); `best` is
    None while nothing finished with a finite loss. `suggestions` are new configs to start now, in the order
    given, each under every seed, all recorded in round `round`; `round` None means the cell's round stays
    (then `suggestions` is empty). `done` closes the cell: "converged" (the strategy's stopping rule held; the
    engine may still run confirmation seeds of best and near-ties) or "exhausted" (budget, grid or rounds used
    up). An empty step (no suggestions, `done` None) means "wait": ask again when a pending config finishes.
    """

    best: Config | None
    best_loss: float
    near_ties: list[Config]
    suggestions: list[Suggestion]
    round: int | None = None
    done: Literal["converged", "exhausted"] | None = None


class Proposer(Protocol):
    """The algorithm of one strategy: the next configs of a cell from its recorded history.

    Lifecycle: the engine calls `propose` whenever it plans an open cell (after every recorded result, and
    when Tune asks for work), on the cell's whole history as recorded in the database, and writes the
    suggestions as pending trials (one per seed) before it asks again. A suggestion that exists already is
    not run twice (the database keeps (cell, config, seed) unique), so a proposer must not suggest a config
    that is in `finished` or `pending`.

    State: a proposer holds none between calls. Everything it decides follows from its arguments (and, for
    the Optuna samplers, from the cell's Optuna study, which mirrors the same rows), so a dispatcher that
    dies and restarts asks again and gets the same answer: finished trials are kept, trials that were in
    flight go back to pending and are never re-proposed. The same history gives the same step (seeded by
    `Limits.seed`).

    Who writes what: the proposer writes no row of ours; it may write to the cell's Optuna study (asked
    trials, the known answer of a repeat), and `record` mirrors each finished trial into that study.

    Threads and processes: one driver plans a sweep at a time (it holds the sweep's lease), and it calls
    `propose` under its lock and `record` after a result's row is committed. Registered proposers are shared by
    every sweep of the process and keep no mutable state of their own, so they need no locking.

    Search space: suggestions hold exactly the names of `history.space.grid`, each with one of its grid
    values, in no particular order of keys; fixed values are the engine's to add.
    """

    name: str

    def propose(self, history: CellHistory, limits: Limits) -> Step:
        """The cell's best so far and its next configs, or a wait, or the end of the cell (see `Step`)."""
        ...

    def record(
        self,
        study: optuna.Study,
        space: Space,
        searched: Config,
        value: float,
        optuna_trial: int | None,
        attrs: Mapping[str, Any],
    ) -> None:
        """Mirror one finished trial into the cell's Optuna study: `value` is its final loss (+inf: diverged or
        failed), `optuna_trial` the number `propose` asked for it (None: add a new finished trial), `attrs` its
        user attributes. Called after the trial's row is committed, possibly twice for the same trial when a
        restarted driver records it again."""
        ...


REGISTRY: dict[str, Proposer] = {}


def register(proposer: Proposer) -> Proposer:
    """Add a proposer under its (lowercase) strategy name; a name registered twice is a programming error."""
    if proposer.name != proposer.name.lower() or proposer.name in REGISTRY:
        raise ValueError(f"proposer name {proposer.name!r} is not lowercase or is registered already")
    REGISTRY[proposer.name] = proposer
    return proposer


def get_proposer(strategy: str) -> Proposer:
    """The registered proposer of `strategy`; an unknown name raises ValueError listing the valid ones."""
    try:
        return REGISTRY[strategy]
    except KeyError:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(sorted(REGISTRY))}") from None


def categorical_record(
    study: optuna.Study, space: Space, searched: Config, value: float, attrs: Mapping[str, Any]
) -> None:
    """Add a finished trial whose params are the grid values themselves (categorical distributions); a value
    that is not in its grid is left out (Optuna would reject it)."""
    study.add_trial(
        optuna.trial.create_trial(
            params={k: v for k, v in searched.items() if k in space.grid and v in space.grid[k]},
            distributions=categorical_distributions(space),
            value=value,
            user_attrs=dict(attrs),
        )
    )


def categorical_distributions(space: Space) -> dict[str, optuna.distributions.BaseDistribution]:
    return {k: optuna.distributions.CategoricalDistribution(list(v)) for k, v in space.grid.items()}
