"""After SIGKILL of `sweep-service run`, every process of the local Ray it started dies too (issue 13: Ray's
DashboardAgent and RuntimeEnvAgent outlived a killed driver by 30 s and more). Real Ray, real trainer: only the
driver is killed (not its process group), so nothing but sweep_service/ray_watchdog.py can take Ray down."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc (Linux)"),
]


# One cell, long enough that a trial is still running when the driver is killed.
SPEC = """\
name: ray-dies-with-us
optimizers: [adamw]
scales: [tiny-130k]
chinchilla: [0.2]
search:
  adamw: {tune: [lr], grid: {lr: [3e-3, 1.2e-2]}, baseline: {lr: 3e-3}}
max_concurrent: 1
"""


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4; the name in (...) may hold spaces
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> set[int]:
    tree, out, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent has not reaped it yet


def test_sigkill_of_run_takes_its_local_ray_down(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    home = tmp_path / "home"
    env = {**os.environ, "SWEEP_HOME": str(home), "SWEEP_RAY_NUM_CPUS": "2"}
    env.pop("DATABASE_URL", None)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep_service.cli", "run", str(spec)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    ray: set[int] = set()
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        try:
            with sqlite3.connect(home / "sweep-service.db") as conn:
                running = conn.execute("SELECT count(*) FROM sweep_trials WHERE status = 'running'").fetchone()[0]
        except sqlite3.OperationalError:
            continue  # not created yet
        if running:
            ray = _descendants(proc.pid)  # Ray's gcs_server, raylet, agents and workers, started under the driver
            break
    assert len(ray) >= 3, f"no local Ray with a running trial seen under the driver: {ray}"
    os.kill(proc.pid, signal.SIGKILL)  # the driver alone: its process group (Ray's) is left to the watchdog
    proc.wait(timeout=30)
    deadline = time.time() + 60
    while time.time() < deadline and any(_alive(p) for p in ray):
        time.sleep(0.5)
    left = {p: Path(f"/proc/{p}/cmdline").read_bytes().rstrip(b"\0")[:80] for p in ray if _alive(p)}
    for p in left:  # leave the machine clean even when the test fails
        os.kill(p, signal.SIGKILL)
    assert not left, f"Ray processes outlived the killed driver by 60 s: {left}"
