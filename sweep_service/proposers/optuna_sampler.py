"""An Optuna sampler as a proposer: the shared ask/tell loop of the tpe, random, cmaes and grid strategies.

Each config is one Optuna trial asked from the cell's study (RDB storage in the sweep's database), so the
sampler learns from every recorded result, and optuna-dashboard opens the cell. Configs are asked one at a
time, up to `max_concurrent` in flight.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from db.models import config_key
from sweep_service.coordinate_descent import near_tie
from sweep_service.proposers.base import CellHistory, Config, Limits, Step, Suggestion, categorical_distributions
from sweep_service.spec import Space

SamplerFactory = Callable[[Space, int], optuna.samplers.BaseSampler]  # (space, seed) -> a fresh sampler
MAX_ASKS = 50  # a sampler may repeat a config: tell it the known answer and ask again, this many times per call


class OptunaSampler:
    """Proposes one new config per call from a fresh sampler over the cell's study.

    A fresh sampler each call, seeded by `Limits.seed` plus the study's size: a fixed seed would replay the same
    draws every call (and stall on repeats), while this stays deterministic across a restart. A repeat of a finished
    config is told its known loss (a repeat of a pending one fails) and the sampler is asked again; after MAX_ASKS
    repeats the call waits while configs are in flight, and ends the cell `converged` when none is. The cell is
    exhausted once it has as many configs as its budget or its grid allows and none is pending. `Limits.max_rounds`
    (the one round of a Phase III ablation, a coordinate descent notion) does not apply: here every config is a
    round of its own. Searched values are the grid values themselves (categorical); a subclass may search another
    encoding (`distributions`, `decode`, `encode`).
    """

    def __init__(self, name: str, make_sampler: SamplerFactory) -> None:
        self.name = name
        self.make_sampler = make_sampler

    def distributions(self, space: Space) -> dict[str, BaseDistribution]:
        return categorical_distributions(space)

    def decode(self, space: Space, params: Mapping[str, Any]) -> Config:
        """The searched config of an asked trial's params."""
        return dict(params)

    def encode(self, space: Space, searched: Config) -> dict[str, Any]:
        """The params of a searched config (a value not in its grid is left out)."""
        return {k: v for k, v in searched.items() if k in space.grid and v in space.grid[k]}

    def propose(self, history: CellHistory, limits: Limits) -> Step:
        space, finished, pending = history.space, history.finished, history.pending
        best = min(finished, key=lambda h: h[1], default=None)
        if best is None:
            best_config, best_loss, near_ties = None, math.inf, []
        else:
            best_config = best[0] if math.isfinite(best[1]) else None
            best_loss = best[1]
            near_ties = [c for c, loss in finished if near_tie(loss, best[1], limits.tolerance)]

        def step(**kwargs: Any) -> Step:
            return Step(best=best_config, best_loss=best_loss, near_ties=near_ties, **kwargs)

        grid_size = math.prod(len(v) for v in space.grid.values())
        if len(finished) + len(pending) >= min(limits.budget, grid_size):
            return step(suggestions=[], done=None if pending else "exhausted")
        if len(pending) >= limits.max_concurrent:
            return step(suggestions=[])
        study = limits.study()
        study.sampler = self.make_sampler(space, limits.seed + len(study.trials))
        seen = {config_key(c) for c, _ in finished} | {config_key(c) for c in pending}
        dists = self.distributions(space)
        for _ in range(MAX_ASKS):
            trial = study.ask(dists)
            searched = self.decode(space, trial.params)
            key = config_key(searched)
            if key in seen:
                known = next((loss for c, loss in finished if config_key(c) == key), None)
                if known is not None:
                    study.tell(trial, known)
                else:
                    study.tell(trial, state=TrialState.FAIL)
                continue
            return step(suggestions=[Suggestion(searched, trial.number)], round=history.round + 1)
        # Only repeats: with configs in flight their results may move the sampler, so wait; with none, it keeps
        # drawing what it has measured (CMA-ES on a small integer grid does once its search distribution has
        # shrunk), so no new config will come: the cell has converged (it would otherwise wait forever).
        return step(suggestions=[], done=None if pending else "converged")

    def record(
        self,
        study: optuna.Study,
        space: Space,
        searched: Config,
        value: float,
        optuna_trial: int | None,
        attrs: Mapping[str, Any],
    ) -> None:
        if optuna_trial is not None:
            # The trial `propose` asked: tell it. Told already when a restarted driver records a trial twice.
            with contextlib.suppress(ValueError, RuntimeError):
                study.tell(optuna_trial, value)
            return
        study.add_trial(
            optuna.trial.create_trial(
                params=self.encode(space, searched),
                distributions=self.distributions(space),
                value=value,
                user_attrs=dict(attrs),
            )
        )
