"""How a real run ends when its sweep cannot succeed (issue 13): `run` exits 1 when the sweep ends `failed`
(it exited 0), and a sweep whose trials the local Ray can never place fails with the reason instead of leaving
trials `running` forever. Real Ray, the real trainer, SQLite under a temporary SWEEP_HOME."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# One config (nothing tuned) at a learning rate that diverges at once: no cell gets a finite loss.
DIVERGES = """\
name: diverges
optimizers: [adamw]
scales: [tiny-130k]
chinchilla: [0.05]
search:
  adamw: {tune: [], fixed: {lr: 1000.0, warmup: 0}}
max_concurrent: 1
"""


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "SWEEP_HOME": str(home), "SWEEP_RAY_NUM_CPUS": "1", "PYTHONPATH": os.getcwd()}
    for name in ("DATABASE_URL", "RAY_ADDRESS"):
        env.pop(name, None)
    return env


def test_run_exits_1_when_its_sweep_ends_failed(tmp_path: Path) -> None:
    spec = tmp_path / "diverges.yaml"
    spec.write_text(DIVERGES)
    home = tmp_path / "home"
    cmd = [sys.executable, "-m", "sweep_service.cli", "run", str(spec)]
    proc = subprocess.run(cmd, env=_env(home), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "failed: no cell produced a finite loss" in proc.stderr
    with sqlite3.connect(home / "sweep-service.db") as conn:
        assert conn.execute("SELECT status FROM sweeps").fetchall() == [("failed",)]
        assert conn.execute("SELECT status FROM sweep_trials").fetchall() == [("diverged",)]


# What a dispatcher on a 1-CPU local Ray does with a sweep submitted elsewhere (an API without that check).
ENGINE = """\
import sys
from db import repository as repo
from db.migrate import upgrade
from db.session import Database
from sweep_service.engine import run_sweep
from sweep_service.resources import ResourceError

url = sys.argv[1]
upgrade(url)
db = Database(url)
doc = {"name": "big", "optimizers": ["adamw"], "scales": ["tiny-130k"], "chinchilla": [0.05], "resources": {"cpu": 2}}
with db.session() as s:
    sweep_id = repo.create_sweep(s, "big", doc).id
try:
    run_sweep(db, sweep_id, __import__("pathlib").Path(sys.argv[2]), ray_num_cpus=1)
except ResourceError as exc:
    print("refused:", exc)
"""


def test_the_engine_fails_a_sweep_the_local_ray_can_never_place(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    cmd = [sys.executable, "-c", ENGINE, url, str(tmp_path / "ray")]
    proc = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert "refused: resources: this machine's Ray can never run a trial: {cpu: 2} per trial" in proc.stdout, (
        proc.stdout + proc.stderr[-2000:]
    )
    with sqlite3.connect(tmp_path / "e.db") as conn:
        ((status, error),) = conn.execute("SELECT status, error FROM sweeps").fetchall()
    assert status == "failed" and "{cpu: 2} per trial; there is {cpu: 1, gpu: 0}" in error
