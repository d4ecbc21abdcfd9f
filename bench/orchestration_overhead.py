"""Orchestration overhead: N fixed-duration trials through our engine against the same trials through plain Ray Tune.

Baseline ("plain Ray Tune"): `tune.Tuner` over the same trainable with `tune.grid_search` over N values,
`max_concurrent_trials=2`, `reuse_actors=True`, 1 CPU per trial: the least Ray Tune needs to run N trials.
Ours: `sweep_service.engine.run_sweep` on a fresh SQLite database (strategy "grid" by default, budget N, the
same concurrency and resources), so every trial goes through our Searcher, the database (pending -> running ->
completed rows, per-cell best) and the Optuna mirror. Both run the same trainable: it sleeps a fixed time and
reports a final loss computed from its config, so the difference in wall time is orchestration alone.

One local Ray (`ray.init(num_cpus=2)`, via the engine's `init_ray`) serves both; each path is warmed up once
outside the timing; the order alternates over rounds, each run waits until the previous run's actors have
released their CPUs, and the medians are compared. Database migration and sweep creation (the API's work)
are outside the timing; everything `run_sweep` does is inside. Each round line also shows the Ray actors
used, when the first trial started and how busy the slots were between the first start and the last end
(from the trials' own timestamps), which separates start-up cost from per-trial cost. Prints both
wall times and the ratio (ours / plain Ray Tune) last; the target is <= 1.10.

    python bench/orchestration_overhead.py [--trials 20] [--seconds 2] [--rounds 2] [--strategy grid] [--profile]

`--profile` times the driver's entry points (Searcher.suggest, SweepDriver.next_trial / refresh /
record_final / _tell_optuna) during our runs and prints where the driver's time went.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any

from db import repository as repo
from db.migrate import upgrade
from db.session import Database
from sweep_service import engine

Trainable = Callable[[dict[str, Any]], None]


def make_trainable(seconds: float, trial_log: Path) -> Trainable:
    """A trial that sleeps `seconds`, then reports a final loss that depends on its config (deterministic).

    Each trial appends "<worker pid> <start> <end>" (wall-clock seconds) to `trial_log`: the distinct pids
    count the Ray actors a run started (with reuse_actors, ideally one per slot), and the intervals show how
    long slots stood idle between trials.
    """

    def fixed_duration_trial(config: dict[str, Any]) -> None:
        from ray import tune

        start = time.time()
        time.sleep(seconds)
        with open(trial_log, "a") as f:
            f.write(f"{os.getpid()} {start:.6f} {time.time():.6f}\n")
        lr = float(config["run"]["hparams"]["lr"])
        loss = 3.0 + (math.log10(lr) + 2.5) ** 2  # a bowl over the grid: any deterministic number would do
        tune.report(
            {
                "kind": "final",
                "status": "completed",
                "final_eval_loss": loss,
                "initial_eval_loss": 5.5,
                "steps": 1,
                "total_steps": 1,
                "wall_seconds": seconds,
            }
        )

    return fixed_duration_trial


@dataclass(frozen=True)
class TrialLog:
    actors: int  # distinct worker processes that ran trials
    first_start_s: float  # from the start of the timing to the first trial's start
    span_s: float  # from the first trial's start to the last trial's end: the wall time without start-up
    busy: float  # trial time / (span from the first start to the last end x slots): 1.0 = no slot ever idle


def read_trial_log(path: Path, t0: float, slots: int) -> TrialLog:
    rows = [line.split() for line in path.read_text().splitlines()]
    starts, ends = [float(r[1]) for r in rows], [float(r[2]) for r in rows]
    span = max(ends) - min(starts)
    return TrialLog(
        actors=len({r[0] for r in rows}),
        first_start_s=min(starts) - t0,
        span_s=span,
        busy=sum(e - s for s, e in zip(starts, ends, strict=True)) / (span * slots),
    )


def grid_values(n: int) -> list[float]:
    """N distinct learning rates: the one searched hyperparameter, so the grid has exactly N configs."""
    return [round(1e-3 * (i + 1), 6) for i in range(n)]


def sweep_spec(n: int, max_concurrent: int, strategy: str = "grid") -> dict[str, Any]:
    values = grid_values(n)
    return {
        "name": "orchestration-overhead",
        "optimizers": ["adamw"],
        "scales": ["tiny-130k"],
        "chinchilla": [1],
        "search": {"adamw": {"tune": ["lr"], "grid": {"lr": values}, "baseline": {"lr": values[0]}}},
        "strategy": strategy,  # grid and coordinate descent both run each of the N configs once
        "budget": n,
        "max_concurrent": max_concurrent,
        "resources": {"cpu": 1, "gpu": 0},
    }


def run_ours(
    trainable: Trainable, n: int, max_concurrent: int, work: Path, strategy: str = "grid"
) -> tuple[float, float]:
    """Wall seconds of `run_sweep` on a fresh SQLite database and the clock at its start; checks all N completed."""
    url = f"sqlite:///{work / 'sweep.db'}"
    upgrade(url)
    db = Database(url)
    doc = sweep_spec(n, max_concurrent, strategy)
    with db.session() as s:
        sweep_id = repo.create_sweep(s, doc["name"], doc).id
    clock, t0 = time.time(), time.perf_counter()
    engine.run_sweep(db, sweep_id, work / "ray", trainable=trainable)
    wall = time.perf_counter() - t0
    with db.session() as s:
        counts = repo.count_trials_by_status(s, sweep_id)
    db.dispose()
    if counts != {"completed": n}:
        raise RuntimeError(f"our engine did not complete the {n} trials: {counts}")
    return wall, clock


def run_plain(trainable: Trainable, n: int, max_concurrent: int, work: Path) -> tuple[float, float]:
    """Wall seconds of a plain Tuner.fit over the same N configs and the clock at its start; checks all N completed."""
    from ray import tune

    clock, t0 = time.time(), time.perf_counter()  # building the Tuner counts, as it does inside run_sweep
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        # The config has our trainable's shape ({"trial_id", "run": {"hparams"}}) so the function is the same.
        param_space={"trial_id": 0, "run": {"hparams": {"lr": tune.grid_search(grid_values(n))}}},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name="plain", storage_path=str((work / "ray").resolve()), verbose=0),
    )
    results = tuner.fit()
    wall = time.perf_counter() - t0
    done = 0
    for i in range(len(results)):  # ResultGrid is indexable, not typed as iterable
        result = results[i]
        done += result.error is None and (result.metrics or {}).get("status") == "completed"
    if done != n:
        raise RuntimeError(f"plain Ray Tune did not complete the {n} trials: {done} completed")
    return wall, clock


def wait_for_free_cpus(cpus: float, timeout: float = 60.0) -> None:
    """Wait until the previous run's actors have released their CPUs, so a run never starts on fewer slots."""
    import ray

    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0.0) < cpus and time.monotonic() < deadline:
        time.sleep(0.2)


# ---- profiling (--profile) ----------------------------------------------------------------------------------


@dataclass
class Timer:
    calls: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    none_suggestions: int = 0  # suggest() calls that had nothing to hand out (Tune polls again)

    def wrap(self, owner: type, name: str) -> None:
        original = getattr(owner, name)
        label = f"{owner.__name__}.{name}"

        @wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = None
            try:
                out = original(*args, **kwargs)
                return out
            finally:
                self.calls[label] = self.calls.get(label, 0) + 1
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t0
                if name == "suggest" and out is None:
                    self.none_suggestions += 1

        setattr(owner, name, timed)

    def report(self, runs: int) -> None:
        print(f"profile of our driver (totals over {runs} timed runs; nested calls are counted in both):")
        for label in sorted(self.seconds, key=lambda k: -self.seconds[k]):
            n, sec = self.calls[label], self.seconds[label]
            print(f"  {label:<28} {n:>6} calls {sec:>8.2f} s  {1000 * sec / n:>7.1f} ms/call")
        print(f"  suggest() returned None (nothing ready) {self.none_suggestions} times")


def install_profiler() -> Timer:
    timer = Timer()
    timer.wrap(engine.SweepSearcher, "suggest")  # outermost: includes next_trial
    for name in ("next_trial", "refresh", "record_final", "record_eval", "_tell_optuna", "prepare"):
        timer.wrap(engine.SweepDriver, name)
    return timer


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per run (N)")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each trial")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each path, order alternating")
    parser.add_argument("--max-concurrent", type=int, default=2, help="trials at once (= Ray CPUs)")
    parser.add_argument(
        "--strategy",
        choices=("grid", "coordinate_descent"),
        default="grid",
        help="our sweep's strategy (coordinate descent on one hyperparameter of N values runs all N in one round)",
    )
    parser.add_argument("--profile", action="store_true", help="time the driver's entry points in our runs")
    args = parser.parse_args()

    import ray

    slots = args.max_concurrent
    engine.init_ray(None, num_cpus=slots)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)  # both paths: no "wrote the experiment state" lines

    def run_ours_strategy(trainable: Trainable, n: int, max_concurrent: int, work: Path) -> tuple[float, float]:
        return run_ours(trainable, n, max_concurrent, work, args.strategy)

    paths: dict[str, Callable[[Trainable, int, int, Path], tuple[float, float]]] = {
        "ours": run_ours_strategy,
        "plain ray tune": run_plain,
    }
    walls: dict[str, list[float]] = {name: [] for name in paths}
    logs: dict[str, list[TrialLog]] = {name: [] for name in paths}
    with tempfile.TemporaryDirectory(prefix="orchestration-bench-") as tmp:
        root = Path(tmp)
        for name, run in paths.items():  # warm-up: worker processes, imports, first actor start
            work = root / f"warmup-{name.replace(' ', '-')}"
            work.mkdir()
            run(make_trainable(0.05, work / "trials"), 2, args.max_concurrent, work)
        timer = install_profiler() if args.profile else None
        for r in range(args.rounds):
            order = list(paths) if r % 2 == 0 else list(reversed(paths))
            line = []
            for name in order:
                work = root / f"round{r}-{name.replace(' ', '-')}"
                work.mkdir()
                wait_for_free_cpus(slots)
                wall, clock = paths[name](make_trainable(args.seconds, work / "trials"), args.trials, slots, work)
                log = read_trial_log(work / "trials", clock, slots)
                walls[name].append(wall)
                logs[name].append(log)
                line.append(
                    f"{name} {wall:.2f} s ({log.actors} actors, first trial at {log.first_start_s:.1f} s,"
                    f" slots busy {100 * log.busy:.0f}%)"
                )
            print(f"round {r + 1}: " + "   ".join(line), flush=True)
    ray.shutdown()

    ideal = args.trials * args.seconds / args.max_concurrent
    plain, ours = statistics.median(walls["plain ray tune"]), statistics.median(walls["ours"])
    print(
        f"{args.trials} trials of {args.seconds:g} s on {args.max_concurrent} slots (ideal {ideal:.1f} s), "
        f"{args.rounds} rounds, our strategy {args.strategy}, Ray {ray.__version__}"
    )
    if timer is not None:
        timer.report(args.rounds)
    for name, key in (("plain ray tune (baseline)", "plain ray tune"), ("ours (run_sweep, SQLite)", "ours")):
        wall = statistics.median(walls[key])
        span = statistics.median(log.span_s for log in logs[key])
        per_trial = (wall - ideal) * slots / args.trials
        print(
            f"{name:<27} {wall:6.2f} s median   overhead {per_trial:.2f} s per trial ((wall - ideal) x slots / N)"
            f"   first start to last end {span:.2f} s"
        )
    print(f"ratio ours/plain-ray-tune: {ours / plain:.3f}")


if __name__ == "__main__":
    main()
