"""`sweep-service run` under seeded random SIGINT, SIGTERM and SIGKILL at random moments (issue 13).

Each fault: the run stops; SIGINT/SIGTERM exit 130/143 with the sweep `running` (never completed/failed), no
trial left `running` and the lease released; SIGKILL leaves no Ray process of ours behind. The same command then
resumes it to the end, and the end equals the uninterrupted run: no config run twice for a seed, never more
than max_concurrent trials running, every result and best the same. SWEEP_CHAOS_ITERATIONS sets the number of
faults (default 3, one of each signal); SWEEP_CHAOS_SEED replays a sequence.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import (
    MAX_CONCURRENT,
    Watcher,
    cli,
    count,
    iterations,
    log_text,
    outcome,
    query,
    rng,
    session_processes,
    sqlite_url,
    wait_for,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]


def _interrupt(home: Path, spec: Path, sig: int, after_done: int, delay: float) -> None:
    """Start `run`, wait until `after_done` trials finished and some are running, wait `delay`, send `sig`."""
    url = sqlite_url(home)
    proc = cli(home, "run", str(spec))
    wait_for(
        lambda: (
            (home / "sweep-service.db").exists()
            and count(url, 1, "running") > 0
            and count(url, 1, "completed") >= after_done
        ),
        600,
        "trials to run",
        proc,
    )
    time.sleep(delay)
    if proc.poll() is not None:
        return  # it finished first: nothing to interrupt
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl+C: the terminal signals the whole foreground group, Ray's processes too
    else:
        os.kill(proc.pid, sig)
    code = proc.wait(timeout=300)
    if sig == signal.SIGKILL:
        # The local Ray it started dies with it (sweep_service/ray_watchdog.py).
        wait_for(lambda: not session_processes(proc.pid), 60, "its Ray processes to exit")
        return
    assert code == 128 + sig, log_text(home)
    assert "Traceback" not in log_text(home)
    ((status, claimed_by),) = query(url, "SELECT status, claimed_by FROM sweeps WHERE id = 1")
    assert status == "running" and claimed_by is None  # resumable, the lease released
    assert count(url, 1, "running") == 0  # in-flight trials back to pending
    wait_for(lambda: not session_processes(proc.pid), 60, "its Ray processes to exit")


def test_run_survives_random_signals(tmp_path: Path, spec_file: Path, reference: dict[str, Any]) -> None:
    r = rng("run")
    n = iterations(3)
    for i in range(n):
        home = tmp_path / f"run-{i}"
        sig = SIGNALS[i % 3] if n <= 3 else r.choice(SIGNALS)
        url = sqlite_url(home)
        watcher = Watcher(url, 1)
        with watcher.watching():
            _interrupt(home, spec_file, sig, after_done=r.randint(0, 2), delay=r.uniform(0, 3))
            proc = cli(home, "run", str(spec_file))
            assert proc.wait(timeout=900) == 0, log_text(home)
            watcher.poll()
        assert outcome(url, 1) == reference, f"{signal.Signals(sig).name}: {log_text(home)}"
        assert watcher.max_running <= MAX_CONCURRENT
        assert not watcher.changed, watcher.changed  # no finished trial ran again
        ((status,),) = query(url, "SELECT status FROM sweeps WHERE id = 1")
        assert status == "completed"
