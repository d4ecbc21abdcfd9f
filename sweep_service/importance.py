"""Hyperparameter importance of one cell: the share of the loss's variance over the cell's finished trials
that each hyperparameter's main effect explains (a functional ANOVA, Hutter, Hoos & Leyton-Brown 2014,
"An Efficient Approach for Assessing Hyperparameter Importance", computed on the observed trials directly
instead of on a random forest fitted to them: no scikit-learn, and a coordinate-descent cell's trials sit on
a grid, where the observed means are what a forest would predict).

For hyperparameter k with observed values v_1..v_m, the main effect is the mean loss of the trials at each
v_j minus the overall mean; its variance (weighted by how many trials sit at each value) over the loss's
total variance is k's importance. Importances are in [0, 1]; they need not sum to 1 (interactions and noise
take the rest, reported as `unexplained`). Diverged trials count at the cell's worst finished loss (they are
bad, but an infinite loss would make every variance infinite), which is what Optuna's evaluators do with a
trial whose value is the worst.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from db.models import TRIAL_RANKED

# Continuous values (a random or TPE search) are grouped into this many quantile bins before the means:
# with one trial per value the "main effect" would explain everything. 5 bins (quintiles) keep ~20% of the
# trials per bin, fANOVA's forest leaves hold about as many on a few hundred trials.
BINS = 5
# A hyperparameter needs at least two distinct values, and a cell at least this many finished trials, for a
# variance to mean anything (3: the fewest where a between-group variance is not identically the total).
MIN_TRIALS = 3


@dataclass(frozen=True)
class Importance:
    hparam: str
    importance: float  # share of the loss variance explained by the main effect, in [0, 1]
    n_values: int  # distinct values (bins for continuous ones) seen in the cell's finished trials


def _groups(values: pd.Series) -> pd.Series:
    """Group labels: the values themselves when few, else quantile bins (on log scale for positive ranges)."""
    distinct = values.map(repr).nunique()
    numeric = pd.to_numeric(values, errors="coerce")
    if distinct <= BINS * 2 or numeric.isna().any():
        return values.map(repr)
    x = np.log(numeric) if (numeric > 0).all() else numeric
    return pd.qcut(x, q=BINS, duplicates="drop").astype(str)


def cell_importance(trials: pd.DataFrame) -> tuple[list[Importance], int]:
    """Importances of one cell's trials (rows of the analysis trials frame: config, loss, status), most
    important first, and the number of trials used."""
    done = trials[trials["status"].isin(TRIAL_RANKED)]
    losses = pd.to_numeric(done["loss"], errors="coerce").astype(float)
    finite = losses[np.isfinite(losses)]
    if len(done) < MIN_TRIALS or finite.empty:
        return [], len(done)
    y = losses.where(np.isfinite(losses), float(finite.max())).to_numpy()
    total = float(np.var(y))
    configs = pd.DataFrame([dict(c) if isinstance(c, dict) else {} for c in done["config"]])
    out: list[Importance] = []
    for name in configs.columns:
        column = configs[name]
        if column.isna().any() or column.map(repr).nunique() < 2:
            continue  # fixed in this cell (or absent from some trials): nothing to attribute
        labels = _groups(column).to_numpy()
        effect = 0.0
        for label in set(labels):
            at = y[labels == label]
            effect += len(at) * (float(at.mean()) - float(y.mean())) ** 2
        share = effect / len(y) / total if total > 0 else 0.0
        out.append(Importance(str(name), min(1.0, share), len(set(labels))))
    out.sort(key=lambda r: (-r.importance, r.hparam))
    return out, len(done)


def importance_table(trials: pd.DataFrame, cell: str | None = None) -> list[dict[str, Any]]:
    """Per cell (or the one named): {cell, optimizer, n_trials, unexplained, rows: [Importance]}."""
    out = []
    frame = trials if cell is None else trials[trials["cell"] == cell]
    for key, group in frame.groupby("cell", sort=True):
        rows, n = cell_importance(group)
        explained = sum(r.importance for r in rows)
        out.append(
            {
                "cell": str(key),
                "optimizer": str(group["optimizer"].iloc[0]),
                "n_trials": n,
                "unexplained": max(0.0, 1.0 - explained) if rows else math.nan,
                "rows": rows,
            }
        )
    return out
