"""The CPU dry run of bench/gpu_check.py (issue 18 item 2): the same code as the GPU run, at the tiny scales.

Run in a subprocess where Ray, Optuna, SQLAlchemy and FastAPI cannot be imported, as on a bare GPU machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("ray", "optuna", "sqlalchemy", "fastapi")  # issue 18: a GPU machine may have NumPy, pandas, SciPy

# A meta-path finder that refuses the packages a GPU machine may lack, then the script as __main__.
RUNNER = """
import importlib.abc, runpy, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not installed on a bare GPU machine")
        return None
sys.meta_path.insert(0, Refuse())
sys.argv = ["bench/gpu_check.py", *{argv!r}]
runpy.run_path("bench/gpu_check.py", run_name="__main__")
"""


@pytest.mark.slow
def test_cpu_dry_run_writes_every_figure(tmp_path: Path) -> None:
    argv = ["--device", "cpu", "--tiny", "--out", str(tmp_path)]
    code = RUNNER.format(blocked=set(BLOCKED), argv=argv)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("trainer / plain loop tokens/s (eager):")  # the ratio is printed last

    figures = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in
               ("trainer", "optimizers", "sophia_hvp", "newton_schulz", "scale_big")}  # fmt: skip
    assert all(f["ok"] for f in figures.values()), {k: f.get("error") for k, f in figures.items()}

    trainer = figures["trainer"]
    for key in ("trainer_eager", "plain_eager"):
        assert trainer[key]["tokens_per_second"] > 0
    assert trainer["ratio_eager"] > 0

    rows = figures["optimizers"]["optimizers"]
    assert len(rows) == 13
    for name, row in rows.items():
        assert row["finite"] and row["loss_dropped"], (name, row)
        assert row["step_ms"] > 0
    assert rows["adamw"]["ratio_to_fused_adamw"] == 1.0

    hvp = figures["sophia_hvp"]
    assert hvp["hessian_finite"] and hvp["hessian_nonzero"]
    assert hvp["sdpa_double_backward"]["MATH"] == "double backward ok"

    ns = figures["newton_schulz"]
    assert 0 < ns["max_relative_difference"] < 0.05  # bf16 vs fp32: a few percent, never identical

    big = figures["scale_big"]
    assert big["adamw"]["finite"] and big["muon"]["finite"]
    assert json.loads((tmp_path / "environment.json").read_text())["torch"]


def test_a_missing_cuda_device_is_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: device 'cuda': CUDA is not available")
    assert "Traceback" not in proc.stderr
