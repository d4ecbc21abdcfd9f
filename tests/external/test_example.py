"""examples/external: the spec is a valid external sweep over the script's own scales, and the script speaks the
agent's protocol while importing nothing from this project."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from sweep_service.spec import load_spec_file, plan_document

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "external"


def test_the_spec_plans_cells_on_the_scripts_own_scales() -> None:
    plan = plan_document(load_spec_file(EXAMPLE / "spec.yaml"))
    assert plan.executor == "external"
    assert [c.key for c in plan.cells] == ["adamw/mlp-small/1", "adamw/mlp-large/1"]
    # The counts the spec gives are the script's (train.py: 8*32*H + H*H for H = 64, 128).
    assert plan.scale_params == {"mlp-small": 8 * 32 * 64 + 64 * 64, "mlp-large": 8 * 32 * 128 + 128 * 128}


def test_the_script_imports_nothing_from_this_project() -> None:
    tree = ast.parse((EXAMPLE / "train.py").read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert roots - {"__future__", "argparse", "json", "math", "os", "torch"} == set()


def test_the_script_prints_a_curve_and_a_final_loss(tmp_path: Path) -> None:
    env = {**os.environ, "SWEEP_TRIAL_SCALE": "mlp-small", "SWEEP_TRIAL_CHINCHILLA": "0.1", "SWEEP_TRIAL_SEED": "1"}
    env.pop("PYTHONPATH", None)
    out = subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), "--lr=0.01", "--wd=0.1", "--decay=1.0"],
        cwd=tmp_path,  # not the repository: nothing of ours is importable
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert all(set(line) == {"step", "loss"} for line in lines[:-1]) and len(lines) > 2
    assert set(lines[-1]) == {"final_loss"} and 0 < lines[-1]["final_loss"] < 4.2  # ln 64 = 4.16: it learned
