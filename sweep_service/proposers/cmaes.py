"""Optuna's CMA-ES sampler as a proposer (strategy "cmaes").

CMA-ES needs ordered numbers, so it searches grid indices (an integer per hyperparameter), not the grid values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, IntDistribution

from sweep_service.proposers.base import Config, register
from sweep_service.proposers.optuna_sampler import OptunaSampler
from sweep_service.spec import Space


class CmaEs(OptunaSampler):
    def distributions(self, space: Space) -> dict[str, BaseDistribution]:
        return {k: IntDistribution(0, len(v) - 1) for k, v in space.grid.items()}

    def decode(self, space: Space, params: Mapping[str, Any]) -> Config:
        return {k: space.grid[k][int(i)] for k, i in params.items()}

    def encode(self, space: Space, searched: Config) -> dict[str, Any]:
        # A value not in its grid (a config recorded before the grid changed) is mirrored as the first index.
        return {k: list(space.grid[k]).index(v) if v in space.grid[k] else 0 for k, v in searched.items()}


def _sampler(space: Space, seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


register(CmaEs("cmaes", _sampler))
