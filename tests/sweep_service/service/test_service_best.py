"""sweep_service.service.best: the best config per (optimizer, scale, chinchilla) across sweeps, on SQLite and
PostgreSQL. GET /best (tests/api/test_best.py) and `sweep-service best` render it; test_best_agreement.py runs both."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from service_builders import add_sweep

from db import repository as repo
from db.session import Database
from sweep_service import catalog
from sweep_service.service import best
from sweep_service.service.errors import Invalid


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def test_recorded_and_unrecorded_cells_compete_across_sweeps(db: Database) -> None:
    paper, _, _ = add_sweep(db, "paper", {}, recorded={"adamw/130m/1": (3.53, {"lr": 8e-3})}, imported=True)
    # Still running: its best is ranked from its finished trials (mean over seeds; a running seed waits).
    ours, _, trials = add_sweep(
        db,
        "ours",
        {
            "adamw/130m/1": [
                ({"lr": 4e-3}, 0, "completed", 3.50),
                ({"lr": 4e-3}, 1, "completed", 3.52),
                ({"lr": 2e-3}, 0, "completed", 3.511),
                ({"lr": 1e-3}, 0, "running", None),
            ],
            "lion/130m/1": [({"lr": 1e-4}, 0, "diverged", None)],  # only divergence: no result
        },
    )
    (row,) = best.best(db)
    assert (row.optimizer, row.scale, row.chinchilla) == ("adamw", "130m", 1.0)
    assert (row.sweep_id, row.sweep_name, row.imported, row.cell) == (ours, "ours", False, "adamw/130m/1")
    assert row.loss == pytest.approx(3.51) and row.config == {"lr": 4e-3}
    assert row.near_ties == [{"lr": 4e-3}, {"lr": 2e-3}]  # 3.511 is within 3e-3 of 3.51
    assert row.trial_id == trials[0]  # the best config's lowest-loss seed
    assert row.cells_considered == 2 and row.non_embedding_params == catalog.scale_params()["130m"]
    assert best.best(db, optimizer="lion") == []

    add_sweep(db, "better", {}, recorded={"adamw/130m/1": (3.40, {"lr": 6e-3})})
    assert best.best(db)[0].config == {"lr": 6e-3} and best.best(db)[0].cells_considered == 3
    assert best.best(db, chinchilla=2.0) == [] and paper != ours


def test_equal_losses_go_to_the_older_cell_and_rows_are_ordered_by_size(db: Database) -> None:
    first, _, _ = add_sweep(db, "first", {}, recorded={"muon/130m/1": (3.4, {"lr": 1e-2})})
    add_sweep(db, "second", {}, recorded={"muon/130m/1": (3.4, {"lr": 2e-2}), "muon/tiny-130k/1": (4.0, {"lr": 1e-2})})
    rows = best.best(db, optimizer="muon")
    assert [r.scale for r in rows] == ["tiny-130k", "130m"]  # smallest first
    assert rows[1].sweep_id == first and rows[1].config == {"lr": 1e-2} and rows[1].cells_considered == 2


def test_lowest_is_one_answer_across_optimizers(db: Database) -> None:
    add_sweep(db, "s", {}, recorded={"muon/130m/1": (3.46, {"lr": 1e-2}), "adamw/130m/1": (3.53, {"lr": 8e-3})})
    rows = best.best(db, scale="130m", chinchilla=1.0)
    one = best.lowest(rows)
    assert one is not None and one.optimizer == "muon" and one.cells_considered == 2
    assert best.lowest([]) is None


def test_unknown_names_list_the_catalog_then_the_stored_ones(db: Database) -> None:
    add_sweep(db, "import", {}, recorded={"foo/2b/1": (2.4, {"lr": 1e-3})}, imported=True)
    assert [r.scale for r in best.best(db, optimizer="foo", scale="2b")] == ["2b"]
    with pytest.raises(best.UnknownName) as caught:
        best.best(db, optimizer="adamx")
    assert isinstance(caught.value, Invalid) and caught.value.field == "optimizer"
    assert caught.value.valid == [*catalog.optimizer_names(), "foo"]
    with pytest.raises(best.UnknownName, match="unknown scale '3b'; valid: 130m, ") as caught:
        best.check_names(db, scale="3b")
    assert caught.value.valid[-1] == "2b" and caught.value.name == "3b"
    best.check_names(db, optimizer="adamw", scale="130m")  # catalog names: no error


def test_the_version_follows_a_finished_trial_of_an_unranked_cell(db: Database) -> None:
    sweep_id, _, _ = add_sweep(db, "s", {"adamw/130m/1": [({"lr": 1e-3}, 0, "completed", 3.6)]})
    before = best.inputs_version(db)
    assert best.inputs_version(db) == before
    with db.session() as s:
        (cell,) = repo.cells_of(s, sweep_id)
        trial = repo.add_trial(s, cell, {"lr": 2e-3}, {"lr": 2e-3}, 0, 1)
        assert trial is not None
        assert repo.transition_trial(s, trial.id, ["pending"], "running")
        assert repo.transition_trial(s, trial.id, ["running"], "completed", final_loss=3.5)
    assert best.inputs_version(db) != before
    assert best.best(db)[0].config == {"lr": 2e-3}


def test_the_use_case_does_not_import_torch() -> None:
    code = "import sys, sweep_service.service.best; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
