"""Coordinate descent (the paper's, PAPER.md section 4) as a proposer: sweep_service.coordinate_descent.propose
in synchronous rounds, each round a whole neighbourhood run in parallel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from sweep_service import coordinate_descent as cd
from sweep_service.proposers.base import CellHistory, Config, Limits, Step, Suggestion, categorical_record, register
from sweep_service.spec import Space


class CoordinateDescent:
    """Rounds are synchronous: the next neighbourhood is proposed only once every config of the previous one has
    finished, so a resumed sweep makes the same decisions as an uninterrupted one (PAPER.md section 4). A round
    proposes at most what is left of the budget; the cell is exhausted when the budget or `max_rounds` is used
    up, converged when the centre's whole neighbourhood is finished (or pruned by the warmup rule)."""

    name = "coordinate_descent"

    def propose(self, history: CellHistory, limits: Limits) -> Step:
        space = history.space
        proposal = cd.propose(
            space,
            space.baseline,
            history.finished,
            limits.tolerance,
            pending=history.pending,
            steps_for=limits.steps_for,
        )
        best = None if proposal.best is None else _searched(space, proposal.best)
        near_ties = [_searched(space, c) for c in proposal.near_ties]

        def step(**kwargs: Any) -> Step:
            return Step(best=best, best_loss=proposal.best_loss, near_ties=near_ties, **kwargs)

        if history.pending:
            return step(suggestions=[])  # synchronous rounds: wait for the whole neighbourhood
        if proposal.converged:
            return step(suggestions=[], done="converged")
        if limits.max_rounds is not None and history.round >= limits.max_rounds:
            return step(suggestions=[], done="exhausted")  # a Phase III ablation: one round only
        room = limits.budget - len(history.finished) - len(history.pending)
        if room <= 0:
            return step(suggestions=[], done="exhausted")
        suggestions = [Suggestion(_searched(space, c)) for c in proposal.configs[:room]]
        return step(suggestions=suggestions, round=history.round + 1)

    def record(
        self,
        study: optuna.Study,
        space: Space,
        searched: Config,
        value: float,
        optuna_trial: int | None,
        attrs: Mapping[str, Any],
    ) -> None:
        # No trial was asked: every finished one is added to the study as it is (optuna-dashboard shows the cell).
        categorical_record(study, space, searched, value, attrs)


def _searched(space: Space, config: Mapping[str, Any]) -> Config:
    return {k: config[k] for k in space.grid}


register(CoordinateDescent())
