"""Chaos soak: one sweep under N random faults against the same sweep uninterrupted.

Baseline: `sweep-service run` of the chaos sweep (tests/chaos/harness.py: tiny-130k at 0.05x Chinchilla, a 2x2
grid, max_concurrent 2, real Ray Tune and real training) on a fresh SQLite database, start to end.
Soak: the same sweep on another fresh database; `run` is started, and after a random wait (seeded) gets a
random SIGINT (to its process group, as Ctrl+C), SIGTERM or SIGKILL; it is started again, until N faults have
been injected; then it runs to the end. A watcher polls the database all along.

Prints the faults injected, trials lost (a trial of the uninterrupted run with no finished result, or a
different one: must be 0), duplicates (a (config, seed) stored twice, or a finished trial run again: must be 0),
the most trials ever running at once, whether every cell's best equals the baseline's, and, last, the wall time
of the soak relative to the uninterrupted sweep.

    python bench/chaos_soak.py [--faults 4] [--seed 13]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: bench/ runs as a script

from tests.chaos.harness import (
    MAX_CONCURRENT,
    SPEC,
    Watcher,
    cli,
    count,
    outcome,
    query,
    sqlite_url,
)


def run_to_end(home: Path, spec: Path) -> None:
    proc = cli(home, "run", str(spec))
    if proc.wait() != 0:
        raise SystemExit(f"run failed: see {home}")


def soak(home: Path, spec: Path, faults: int, rng: random.Random) -> tuple[int, dict[str, int]]:
    url = sqlite_url(home)
    injected: dict[str, int] = {}
    n = 0
    while n < faults:
        proc = cli(home, "run", str(spec))
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if (home / "sweep-service.db").exists() and count(url, 1, "running") > 0:
                break
            time.sleep(0.3)
        time.sleep(rng.uniform(0, 6))
        if proc.poll() is not None:
            break  # the sweep finished before this fault
        sig = rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        proc.wait()
        n += 1
        injected[signal.Signals(sig).name] = injected.get(signal.Signals(sig).name, 0) + 1
        print(f"fault {n}: {signal.Signals(sig).name}, exit {proc.returncode}", flush=True)
    run_to_end(home, spec)
    return n, injected


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--faults", type=int, default=4, help="random faults to inject (N)")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="chaos-soak-") as tmp:
        root = Path(tmp)
        spec = root / "chaos.yaml"
        spec.write_text(SPEC)

        start = time.monotonic()
        run_to_end(root / "baseline", spec)
        baseline_seconds = time.monotonic() - start
        reference = outcome(sqlite_url(root / "baseline"), 1)
        print(f"uninterrupted: {baseline_seconds:.1f} s, {len(reference['trials'])} trials", flush=True)

        home = root / "soak"
        watcher = Watcher(sqlite_url(home), 1)
        start = time.monotonic()
        with watcher.watching():
            n, injected = soak(home, spec, args.faults, rng)
            watcher.poll()
        soak_seconds = time.monotonic() - start
        result = outcome(sqlite_url(home), 1)
        ((status,),) = query(sqlite_url(home), "SELECT status FROM sweeps WHERE id = 1")

    ref_trials = {(k, seed): (status, loss) for k, seed, status, loss in reference["trials"]}
    got = {(k, seed): (status, loss) for k, seed, status, loss in result["trials"]}
    lost = sum(1 for key, value in ref_trials.items() if got.get(key) != value)
    duplicates = (len(result["trials"]) - len(got)) + len(watcher.changed)
    print(f"faults injected: {n} ({', '.join(f'{k} {v}' for k, v in sorted(injected.items())) or 'none'})")
    print(f"trials lost: {lost}")
    print(f"duplicates: {duplicates}")
    print(f"most trials running at once: {watcher.max_running} (max_concurrent {MAX_CONCURRENT})")
    print(f"bests equal to the uninterrupted run's: {result['cells'] == reference['cells']}; sweep {status}")
    print(f"wall time ratio soak/uninterrupted: {soak_seconds / baseline_seconds:.2f}")


if __name__ == "__main__":
    main()
