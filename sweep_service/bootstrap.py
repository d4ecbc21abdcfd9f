"""Percentile bootstrap over seeds: the intervals of best_per_cell (ranking) and speedups (PAPER.md has one seed;
with confirm_seeds a config has several, and these say how far its mean can be trusted)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["CI_LEVEL", "N_BOOT", "percentile_interval", "resample_means"]

# Bootstrap defaults: 1000 resamples, central 95% interval (common practice; the paper ran one seed).
N_BOOT = 1000
CI_LEVEL = 0.95


def percentile_interval(draws: np.ndarray, ci: float) -> tuple[float, float]:
    """Central `ci` percentile interval; 'inverted_cdf' never interpolates, so +inf draws stay +inf."""
    finite_or_inf = draws[~np.isnan(draws)]
    if finite_or_inf.size == 0:
        return (math.nan, math.nan)
    tail = (1.0 - ci) / 2.0
    low, high = np.quantile(finite_or_inf, [tail, 1.0 - tail], method="inverted_cdf")
    return (float(low), float(high))


def resample_means(losses: Sequence[float], rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """Means of `n_boot` resamples (with replacement) of the per-seed losses; shape (n_boot,)."""
    values = np.asarray(losses, dtype=np.float64)
    picks = rng.integers(0, values.size, size=(n_boot, values.size))  # (n_boot, n_seeds)
    return values[picks].mean(axis=1)
