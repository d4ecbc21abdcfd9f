"""Scaling-law hold-out: predict every 520m cell of the paper's released results from 130m and 300m only.

For each optimizer of the release (sweep_service/data/paper_results.json, the authors' best configs), fit
its hyperparameters over the 130m and 300m cells with both methods of sweep_service.scaling, predict each 520m
cell (every multiple the release has at 520m) and compare with the authors' tuned value there. Prints, per
hyperparameter and method, the median relative error |predicted - actual| / |actual| over every (optimizer,
multiple) where the hyperparameter is numeric and varies between cells; then, per method, the mean of those
per-hyperparameter medians (each hyperparameter weighs once: a median over all cases would be 0 for robust,
which hits most cases exactly by taking a measured value).

Baseline, measured in the same run: method=paper. With two sizes only, the paper's layout (three smallest sizes
x 1-8x, 12 cells) has 8 cells; its procedure (fit the middle ones, hold out the last) runs on what there is.
Prints the robust/paper ratio of the mean per-hyperparameter median errors last (below 1: robust predicts the
held-out size better).

    PYTHONPATH=. python bench/scaling_law_holdout.py
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import pandas as pd

from sweep_service import analysis, scaling
from sweep_service.paper_results import load_paper_results

DATA = Path(__file__).resolve().parents[1] / "sweep_service" / "data" / "paper_results.json"
TRAIN_SCALES = ("130m", "300m")
TARGET_SCALE = "520m"


def _rel(predicted: object, actual: float) -> float:
    if not isinstance(predicted, int | float) or isinstance(predicted, bool) or not math.isfinite(predicted):
        return math.inf  # no prediction, or not a finite one: a miss
    if actual == 0:
        return abs(float(predicted))
    return abs(float(predicted) - actual) / abs(actual)


def main() -> int:
    if not DATA.is_file():
        print(f"{DATA}: not found", file=sys.stderr)
        return 2
    best = analysis.best_per_cell(load_paper_results(DATA), n_boot=0)
    best = best[best["best_config"].map(lambda c: isinstance(c, dict))]
    errors: dict[tuple[str, str], list[float]] = {}
    for optimizer in sorted(set(best["optimizer"])):
        mine = best[best["optimizer"] == optimizer]
        train = mine[mine["scale"].isin(TRAIN_SCALES)]
        target = mine[mine["scale"] == TARGET_SCALE]
        if train.empty or target.empty:
            continue
        for method in scaling.METHODS:
            fits = scaling.fit_hparam_scaling(train, method=method)  # type: ignore[arg-type]
            for row in target.itertuples():
                for name, fit in fits.items():
                    values = [cfg.get(name) for cfg in mine["best_config"]]
                    actual = row.best_config.get(name)
                    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
                    if len(numbers) != len(values) or len(set(numbers)) < 2 or actual is None:
                        continue  # non-numeric, or one value everywhere: nothing to learn
                    got = scaling.predict_hparam(fit, float(row.non_embedding_params), float(row.chinchilla))
                    errors.setdefault((name, method), []).append(_rel(got.value, float(actual)))
    names = sorted({n for n, _ in errors})
    table = pd.DataFrame(
        [
            {
                "hparam": n,
                "cases": len(errors.get((n, "paper"), [])),
                **{m: statistics.median(errors[(n, m)]) for m in scaling.METHODS if (n, m) in errors},
            }
            for n in names
        ]
    )
    with pd.option_context("display.float_format", "{:.3g}".format, "display.width", 120):
        print(f"median relative error predicting {TARGET_SCALE} from {', '.join(TRAIN_SCALES)} (paper release)")
        print(table.to_string(index=False))
    overall = {m: float(table[m].mean()) for m in scaling.METHODS}
    print(f"mean over hyperparameters of the median relative error: paper {overall['paper']:.3g}, "
          f"robust {overall['robust']:.3g}")  # fmt: skip
    print(f"robust/paper ratio (lower is better): {overall['robust'] / overall['paper']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
