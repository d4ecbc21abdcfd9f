"""The full grid as a proposer (strategy "grid"): Optuna's GridSampler over the cell's grid values."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from sweep_service.proposers.base import register
from sweep_service.proposers.optuna_sampler import OptunaSampler
from sweep_service.spec import Space

# GridSampler warns "re-evaluating a configuration" whenever every unvisited grid point is held by a running
# trial, which is normal with concurrent trials; OptunaSampler skips repeats and the cell ends itself.
optuna.logging.get_logger("optuna.samplers._grid").setLevel(optuna.logging.ERROR)


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler without its `study.stop()` once the grid is used up: that raises outside
    `study.optimize` (we ask and tell), and OptunaSampler.propose ends the cell itself when the grid is done."""

    def after_trial(self, study: Any, trial: Any, state: TrialState, values: Any) -> None:
        return None


def _sampler(space: Space, seed: int) -> optuna.samplers.BaseSampler:
    return _GridSampler({k: list(v) for k, v in space.grid.items()}, seed=seed)


register(OptunaSampler("grid", _sampler))
