"""Tests of sweep_service.ranking: ranking flips from hand-built eval curves with known crossings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from sweep_service.ranking import ranking_flips


@dataclass
class Cell:
    optimizer: str
    scale: str
    chinchilla: float
    best_trial_id: int | None
    curves: dict[int, list[tuple[int, float]]] = field(default_factory=dict)


def cell(optimizer: str, losses: list[float], steps: int = 100, chinchilla: float = 1.0, trial: int = 1) -> Cell:
    """A best trial evaluated every `steps / len(losses)` steps."""
    every = steps // len(losses)
    return Cell(optimizer, "tiny", chinchilla, trial, {trial: [(every * (i + 1), v) for i, v in enumerate(losses)]})


def test_a_pair_that_flips_once_settles_at_the_crossing() -> None:
    # a leads until 0.5 of training, then b leads: the crossing is midway between 0.5 (a ahead by 0.1) and 0.6
    # (b ahead by 0.1), at 0.55
    a = cell("adamw", [5.0, 4.5, 4.0, 3.8, 3.6, 3.5, 3.45, 3.4, 3.35, 3.3])
    b = cell("muon", [5.2, 4.7, 4.2, 3.9, 3.7, 3.4, 3.3, 3.2, 3.1, 3.0])
    flips = ranking_flips([a, b])
    row = flips.iloc[0]
    assert (row.optimizer_a, row.optimizer_b, row.final_leader) == ("adamw", "muon", "muon")
    assert row.n_flips == 1 and row.settled_at == pytest.approx(0.55)
    assert row.final_gap == pytest.approx(0.3)


def test_rankings_that_never_change_settle_at_zero_and_steps_are_fractions() -> None:
    # lion's curve has twice the steps (smaller batches): compared by fraction of training, not by step
    a = cell("adamw", [5.0, 4.0, 3.5, 3.3])
    b = cell("lion", [5.5, 5.0, 4.6, 4.3, 4.0, 3.8, 3.6, 3.5], steps=200)
    row = ranking_flips([a, b]).iloc[0]
    assert (
        row.final_leader == "adamw" and row.settled_at == 0.0 and row.n_flips == 0 and row.n_points == 7
    )  # from 0.25: adamw's first eval


def test_cells_without_a_best_curve_and_other_cells_are_apart() -> None:
    a = cell("adamw", [5.0, 4.0, 3.0])
    b = cell("muon", [4.0, 3.5, 3.2], chinchilla=2.0)  # another multiple: no pair
    c = Cell("lion", "tiny", 1.0, None)  # no best trial
    assert ranking_flips([a, b, c]).empty
    tie = ranking_flips([a, cell("muon", [5.5, 4.5, 3.0])]).iloc[0]
    assert tie.final_leader == "" and math.isnan(tie.settled_at)
