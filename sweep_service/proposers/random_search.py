"""Optuna's random sampler as a proposer (strategy "random")."""

from __future__ import annotations

import optuna

from sweep_service.proposers.base import register
from sweep_service.proposers.optuna_sampler import OptunaSampler
from sweep_service.spec import Space


def _sampler(space: Space, seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


register(OptunaSampler("random", _sampler))
