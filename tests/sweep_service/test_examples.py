"""The shipped example specs stay valid, and the JSON copy of the quickstart says the same as the YAML."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from sweep_service.spec import load_spec_file, plan_document

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_quickstart() -> None:
    plan = plan_document(load_spec_file(EXAMPLES / "quickstart.yaml"))
    assert {c.optimizer for c in plan.cells} == {"adamw", "muon"}
    assert {c.scale for c in plan.cells} == {"tiny-130k"}
    tuned = [c for c in plan.cells if c.baseline_from is None]
    assert len(tuned) == 2
    for cell in tuned:  # two hyperparameters on a 3 x 3 grid that the budget covers: every cell can converge
        assert [len(v) for v in cell.space.grid.values()] == [3, 3]
        assert plan.budget >= 9
    # Noise measured and used (sweep_service/noise.py).
    assert plan.tolerance_auto and plan.confirm_seeds >= 1
    # AdamW at multiples that bracket the others' 0.1x, for the speedup fit L(D) = alpha x D^-B + beta
    # (PAPER.md section 5) measured rather than extrapolated.
    multiples = sorted(c.chinchilla for c in plan.cells if c.optimizer == "adamw")
    assert multiples == [0.05, 0.1, 0.2, 0.4, 0.8]
    assert plan.strategy == "coordinate_descent"
    assert json.loads((EXAMPLES / "quickstart.json").read_text()) == yaml.safe_load(
        (EXAMPLES / "quickstart.yaml").read_text()
    )


def test_paper_phase_one() -> None:
    plan = plan_document(load_spec_file(EXAMPLES / "paper.yaml"))
    keys = {c.key for c in plan.cells}
    assert len(keys) == 11 * 4 + 11 * 2  # 130m at 1/2/4/8x, 300m and 520m at 1x (PAPER.md section 4)
    adamw = next(c for c in plan.cells if c.key == "adamw/130m/1")
    assert adamw.space.grid["lr"] == (4e-3, 8e-3, 1.6e-2, 3.2e-2)  # PAPER.md section 3
    assert plan.gpu == 1 and plan.late_loss == 6.0 and plan.late_step == 2000


def test_phases() -> None:
    plan = plan_document(load_spec_file(EXAMPLES / "phases.yaml"))
    by_key = {c.key: c for c in plan.cells}
    assert by_key["adamw/tiny-300k/0.2"].phase == 2
    assert by_key["adamw/tiny-300k/0.2"].from_cells == ("adamw/tiny-130k/0.1", "adamw/tiny-300k/0.1")
    assert by_key["adamw/tiny-520k/0.1"].phase == 3 and by_key["adamw/tiny-520k/0.1"].ablation
