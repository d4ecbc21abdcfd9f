"""The engine end to end: real Ray Tune, the real trainer on real text, a real database.

Small on purpose: tiny-130k at 0.05x Chinchilla (32 steps, a few seconds a trial), a 2x2 grid.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPEC = """\
name: mini
optimizers: [adamw]
scales: [tiny-130k]
chinchilla: [0.05]
search:
  adamw:
    tune: [lr, beta2]
    grid: {lr: [3e-3, 1.2e-2], beta2: [0.95, 0.98]}
    baseline: {lr: 3e-3, beta2: 0.95}
    fixed: {warmup: 4}
max_concurrent: 2
eval_every: 8
"""


def _cli(home: Path, *args: str, **popen: object) -> subprocess.Popen[str]:
    env = {**os.environ, "SWEEP_HOME": str(home), "SWEEP_RAY_NUM_CPUS": "2"}
    env.pop("DATABASE_URL", None)
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "sweep_service.cli", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **popen,  # type: ignore[call-overload]
    )


def _rows(home: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(home / "sweep-service.db") as conn:
        return conn.execute(sql).fetchall()


def _run_to_end(home: Path, spec: Path) -> str:
    proc = _cli(home, "run", str(spec))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def test_sweep_runs_on_ray_and_survives_sigkill(tmp_path: Path) -> None:
    spec = tmp_path / "mini.yaml"
    spec.write_text(SPEC)

    # Uninterrupted reference run.
    ref_home = tmp_path / "ref"
    out = _run_to_end(ref_home, spec)
    assert "adamw/tiny-130k/0.05" in out and "converged" in out
    ref = _rows(ref_home, "SELECT config_key, status, final_loss FROM sweep_trials ORDER BY config_key")
    assert len(ref) == 4 and all(status == "completed" for _, status, _ in ref)
    curves = _rows(ref_home, "SELECT trial_id, COUNT(*) FROM curve_points GROUP BY trial_id")
    assert len(curves) == 4 and all(int(str(n)) >= 4 for _, n in curves)  # evals at steps 8, 16, 24, 32
    ref_best = _rows(ref_home, "SELECT best_loss, best_config FROM cells")
    optuna_trials = _rows(ref_home, "SELECT COUNT(*) FROM trials")
    assert optuna_trials == [(4,)]  # Optuna's own table: every trial mirrored in the cell's study
    # Each trial's reproducibility record and worker arrive through Ray Tune (which flattens nested results).
    for repro, worker in _rows(ref_home, "SELECT repro, worker FROM sweep_trials"):
        record = json.loads(str(repro))
        assert record["torch"] == torch.__version__ and record["data"]["sha256"], record
        assert str(worker).count(":") == 1, worker  # host:pid
    # trial.config: the hyperparameters the worker ran, its defaults merged (issue 13 item 7).
    for (raw,) in _rows(ref_home, "SELECT config FROM sweep_trials"):
        config = json.loads(str(raw))
        assert {"decay", "batch_size", "eps", "beta1", "lr", "beta2", "warmup"} <= set(config), config

    # Same sweep, killed with SIGKILL once two trials have finished, then started again.
    home = tmp_path / "killed"
    proc = _cli(home, "run", str(spec), start_new_session=True)
    deadline = time.time() + 300
    finished: list[tuple[object, ...]] = []
    while time.time() < deadline:
        time.sleep(0.5)
        if (home / "sweep-service.db").exists():
            try:
                finished = _rows(home, "SELECT id, final_loss FROM sweep_trials WHERE status = 'completed'")
            except sqlite3.OperationalError:
                continue  # tables not created yet
            if len(finished) >= 2:
                break
    assert len(finished) >= 2, "no trial finished in time"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait(timeout=30)

    out = _run_to_end(home, spec)
    assert "resuming sweep" in out
    after = _rows(home, "SELECT config_key, status, final_loss FROM sweep_trials ORDER BY config_key")
    kept: dict[object, object] = {
        r[0]: r[1] for r in _rows(home, "SELECT id, final_loss FROM sweep_trials WHERE status = 'completed'")
    }
    assert all(kept[i] == loss for i, loss in finished)  # finished trials kept as they were
    assert after == ref  # nothing ran twice, and bitwise the same results as the uninterrupted sweep
    assert _rows(home, "SELECT best_loss, best_config FROM cells") == ref_best
