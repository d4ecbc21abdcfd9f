"""Seed noise against config differences: does the quickstart's tuning see more than noise?

Issue 4 asks that the quickstart's configs differ by more than the seed noise. For every cell of a finished
sweep (default: the latest sweep named like the spec, in the database `make demo` wrote), this bench re-runs
the cell's best config under several seeds (seed 0 is the sweep's own seed: its loss must come back equal
to the recorded one, bitwise on CPU) and compares:

- baseline: the seed noise, the sample standard deviation of the final eval loss over the seeds;
- the spread of the cell's finished configs (max - min of their finite final losses, from the database), and
  how many of them lie further than 2 seed standard deviations from the best.

Prints a row per cell and, last, the smallest ratio spread / seed std over the cells (a ratio well above 1
means the sweep's configs differ by more than the noise). Runs two 1-thread trainings at a time, like the
quickstart.

    python bench/seed_noise.py [--spec examples/quickstart.yaml] [--database-url URL] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from db import queries
from db import repository as repo
from db.session import Database
from sweep_service.settings import get_settings
from sweep_service.spec import load_spec_file, parse_spec
from workers.trainer import DivergenceRule, RunConfig, train


def final_loss(job: dict[str, Any]) -> float:
    result = train(
        RunConfig(
            scale=job["scale"],
            optimizer=job["optimizer"],
            chinchilla=job["chinchilla"],
            hparams=job["hparams"],
            seed=job["seed"],
            eval_every=job["eval_every"],
            divergence=DivergenceRule(),
            threads=1,  # as the quickstart's trials (resources: cpu 1)
        )
    )
    return result.final_eval_loss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="examples/quickstart.yaml")
    parser.add_argument("--database-url", default=None, help="default: the embedded database (SWEEP_HOME)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    spec = parse_spec(load_spec_file(args.spec))
    db = Database(args.database_url or get_settings().db_url())
    with db.session() as s:
        sweeps = [sw for sw in repo.list_sweeps(s, limit=1000) if sw.name == spec.name and sw.status == "completed"]
        if not sweeps:
            print(f"no completed sweep named {spec.name!r} in {db.url}: run `make demo` first", file=sys.stderr)
            return 2
        sweep = max(sweeps, key=lambda sw: sw.id)
        by_key: dict[str, dict[str, Any]] = {}
        for trial, cell in queries.trials_with_cells(s, sweep.id):
            entry = by_key.setdefault(cell.key, {"key": cell.key, "cell": cell, "losses": [], "best": None})
            if trial.status == "completed" and trial.final_loss is not None:
                entry["losses"].append(trial.final_loss)
            elif trial.status == "diverged":
                entry["losses"].append(math.inf)
            if trial.id == cell.best_trial_id:
                entry["best"] = (dict(trial.config), trial.seed, trial.final_loss)
        cells = list(by_key.values())
    print(f"sweep {sweep.id} ({sweep.name}), {len(cells)} cells, seeds {args.seeds}, {spec.eval_every=}")

    # Cells with a single config (AdamW's extra multiples in the quickstart) have no spread to compare.
    cells = [c for c in cells if len(c["losses"]) >= 2]
    jobs: list[dict[str, Any]] = []
    for entry in cells:
        if entry["best"] is None:
            continue
        c = entry["cell"]
        for seed in args.seeds:
            jobs.append(
                {
                    "key": entry["key"],
                    "scale": c.scale,
                    "optimizer": c.optimizer,
                    "chinchilla": c.chinchilla,
                    "hparams": entry["best"][0],
                    "seed": seed,
                    "eval_every": spec.eval_every,
                }
            )
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        losses = list(pool.map(final_loss, jobs))

    ratios: list[float] = []
    print(f"{'cell':<28} {'seed std':>9} {'configs':>7} {'spread':>8} {'>2 std':>6} {'ratio':>7}  seed-0 check")
    for entry in cells:
        if entry["best"] is None:
            print(f"{entry['key']:<28} no best config")
            continue
        seeds = [loss for job, loss in zip(jobs, losses, strict=True) if job["key"] == entry["key"]]
        std = statistics.stdev(seeds) if len(seeds) >= 2 else math.nan
        finite = [x for x in entry["losses"] if math.isfinite(x)]
        spread = max(finite) - min(finite) if finite else math.nan
        best = min(finite) if finite else math.nan
        apart = sum(1 for x in entry["losses"] if x - best > 2 * std)
        ratio = spread / std if std > 0 else math.inf
        ratios.append(ratio)
        recorded_seed, recorded = entry["best"][1], entry["best"][2]
        check = ""
        if recorded_seed in args.seeds and recorded is not None:
            again = seeds[args.seeds.index(recorded_seed)]
            check = "equal" if again == recorded else f"DIFFERS ({again:.6f} vs {recorded:.6f})"
        print(
            f"{entry['key']:<28} {std:>9.4f} {len(entry['losses']):>7} {spread:>8.4f} {apart:>6} {ratio:>7.1f}  {check}"
        )
    print(f"min ratio config spread / seed std over cells: {min(ratios):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
