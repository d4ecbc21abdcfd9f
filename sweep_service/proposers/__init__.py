"""Proposers: the algorithm of each sweep strategy behind one contract (base.Proposer), in a registry keyed by the
strategy name. Importing this package registers every implementation."""

from sweep_service.proposers import cmaes, coordinate_descent, grid, random_search, tpe
from sweep_service.proposers.base import (
    REGISTRY,
    CellHistory,
    Limits,
    Proposer,
    Step,
    Suggestion,
    get_proposer,
)

__all__ = [
    "REGISTRY",
    "CellHistory",
    "Limits",
    "Proposer",
    "Step",
    "Suggestion",
    "cmaes",
    "coordinate_descent",
    "get_proposer",
    "grid",
    "random_search",
    "tpe",
]
