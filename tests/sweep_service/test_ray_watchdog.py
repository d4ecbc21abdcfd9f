"""The local Ray we start dies with us, even after SIGKILL (issue 13: Ray's DashboardAgent and RuntimeEnvAgent
outlived a killed driver by 30 s and more). Without Ray: a driver process starts the watchdog and a child whose
command line mentions ray, as Ray's agents do; the driver is killed with SIGKILL; the child must go too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweep_service import ray_watchdog

DRIVER = """
import subprocess, sys, time
from sweep_service import ray_watchdog
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "fake_ray_agent"])
ray_watchdog.start()
print(child.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    return ray_watchdog.alive(pid)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="the watchdog reads /proc (Linux)")
def test_our_ray_processes_die_with_us_after_sigkill() -> None:
    root = Path(__file__).resolve().parents[2]
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        cwd=root,
    )
    assert driver.stdout is not None
    child = int(driver.stdout.readline())
    time.sleep(ray_watchdog.SNAPSHOT_SECONDS * 2)  # the watchdog has seen the child
    assert _alive(child)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 60
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the 'ray' child outlived its killed driver"


def test_only_processes_that_mention_ray_are_taken_down() -> None:
    ray_like = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "ray_lookalike"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "something_else"])
    try:
        ours = {pid for pid, _ in ray_watchdog.ray_processes(os.getpid())}
        assert ray_like.pid in ours and other.pid not in ours
    finally:
        for p in (ray_like, other):
            p.kill()
            p.wait()


# The driver dies right after start() returns, before any second snapshot; its fake Ray agent, and a fake Ray
# process orphaned in between (its parent, a shell, exits at once), must both go. CI saw the agents survive a
# driver killed 9 s into a run, before the watchdog's first snapshot.
EARLY_DEATH = """
import os, signal, subprocess, sys, time
from sweep_service import ray_watchdog
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "fake_ray_agent"])
ray_watchdog.start()
orphan = subprocess.run(
    ["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(600)' fake_ray_worker >/dev/null 2>&1 & echo $!"],
    capture_output=True, text=True,
).stdout.strip()
print(child.pid, orphan, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="the watchdog reads /proc (Linux)")
def test_a_driver_killed_right_after_start_takes_its_ray_and_its_orphans_down() -> None:
    root = Path(__file__).resolve().parents[2]
    driver = subprocess.Popen(
        [sys.executable, "-c", EARLY_DEATH],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        cwd=root,
    )
    assert driver.stdout is not None
    pids = [int(p) for p in driver.stdout.readline().split()]
    driver.wait()
    assert len(pids) == 2, "the driver did not report its two fake Ray processes"
    deadline = time.monotonic() + 60
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in pids if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"fake Ray processes outlived a driver killed right after start(): {left}"
