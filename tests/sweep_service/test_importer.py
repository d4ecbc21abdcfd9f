"""Importing released results (sweep_service.importer, db.results) on SQLite and PostgreSQL, and its command."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from db import repository as repo
from db import results
from db.migrate import upgrade
from db.session import Database
from sweep_service import analysis
from sweep_service.catalog import scale_params
from sweep_service.cli import main
from sweep_service.importer import PAPER_RESULTS, import_file, import_results, resolve_path
from sweep_service.paper_results import load_paper_results
from sweep_service.settings import get_settings


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def _counts(db: Database) -> tuple[int, int, int]:
    with db.session() as s:
        sweeps = repo.list_sweeps(s, limit=500)
        cells = sum(len(repo.cells_of(s, sw.id)) for sw in sweeps)
        trials = sum(len(repo.trials_of_sweep(s, sw.id)) for sw in sweeps)
    return len(sweeps), cells, trials


def test_paper_results_become_a_finished_imported_sweep(db: Database) -> None:
    raw = json.loads(PAPER_RESULTS.read_text())
    sweep_id = import_results(db, PAPER_RESULTS)
    with db.session() as s:
        sweep = repo.get_sweep(s, sweep_id)
        assert sweep is not None
        assert sweep.imported and sweep.status == "completed" and sweep.finished_at is not None
        assert sweep.idempotency_key is not None and sweep.idempotency_key.startswith("import:sha256:")
        assert sweep.spec["source"]["file"] == "paper_results.json" and "2509.02046" in sweep.spec["source"]["about"]
        cells = repo.cells_of(s, sweep_id)
        trials = repo.trials_of_sweep(s, sweep_id)
        assert len(cells) == len(raw["cells"]) == 134 and len(trials) == 134
        assert {c.status for c in cells} == {"converged"} and {c.strategy for c in cells} == {"imported"}
        by_key = {c.key: c for c in cells}
        first = by_key["adamw/130m/1"]
        assert first.best_loss == pytest.approx(3.5291428565979004, abs=1e-12)  # the file's min_loss
        assert first.best_config is not None and first.best_config["lr"] == 8e-3  # learning_rate -> lr
        assert first.settings["non_embedding_params"] == 134_217_728 and first.settings["near_tie_count"] == 14
        assert "soap/520m/1" in by_key and not any(k.startswith("soape/") for k in by_key)  # registry names
        best_trial = repo.get_trial(s, first.best_trial_id or 0)
        assert best_trial is not None and best_trial.status == "completed" and best_trial.seed == 0
        assert best_trial.final_loss == first.best_loss and best_trial.config == first.best_config
        assert best_trial.tokens == 20 * 134_217_728  # 1x Chinchilla = 20 tokens per parameter
        assert {t.status for t in trials} == {"completed"}


def test_the_trials_frame_read_back_matches_the_file(db: Database) -> None:
    sweep_id = import_results(db, PAPER_RESULTS)
    with db.session() as s:
        frame = results.sweep_trials(s, sweep_id, scale_params())
    analysis.check_trials(frame)
    expected = load_paper_results(PAPER_RESULTS)
    ours = frame.set_index(["optimizer", "scale", "chinchilla"]).sort_index()
    theirs = expected.set_index(["optimizer", "scale", "chinchilla"]).sort_index()
    assert list(ours.index) == list(theirs.index)
    assert ours["loss"].tolist() == pytest.approx(theirs["loss"].tolist(), abs=1e-12)
    assert ours["config"].tolist() == theirs["config"].tolist()
    assert ours["non_embedding_params"].tolist() == theirs["non_embedding_params"].tolist()
    assert ours["imported"].all() and (ours["sweep_id"] == sweep_id).all()
    # And what the analysis makes of it equals what it makes of the file itself.
    a = analysis.best_per_cell(frame, n_boot=0)[["optimizer", "scale", "chinchilla", "best_loss"]]
    b = analysis.best_per_cell(expected, n_boot=0)[["optimizer", "scale", "chinchilla", "best_loss"]]
    assert a.reset_index(drop=True).equals(b.reset_index(drop=True))


def test_importing_the_same_content_twice_returns_the_first_sweep(db: Database, tmp_path: Path) -> None:
    first = import_results(db, PAPER_RESULTS)
    counts = _counts(db)
    assert import_results(db, "paper") == first  # the shortcut names the same file
    # The same content formatted differently is the same results.
    reformatted = tmp_path / "copy.json"
    reformatted.write_text(json.dumps(json.loads(PAPER_RESULTS.read_text()), indent=None, sort_keys=True))
    again = import_file(db, reformatted)
    assert again.sweep_id == first and not again.created
    assert _counts(db) == counts
    # Different content is another sweep.
    changed = json.loads(PAPER_RESULTS.read_text())
    changed["cells"] = changed["cells"][:3]
    other = tmp_path / "three.json"
    other.write_text(json.dumps(changed))
    assert import_results(db, other) != first
    assert _counts(db) == (counts[0] + 1, counts[1] + 3, counts[2] + 3)


def _custom(tmp_path: Path) -> Path:
    """A results file with a scale the catalog lacks, one without a count, and other runs per cell."""
    payload: dict[str, Any] = {
        "name": "my release",
        "non_embedding_params": {"2b": 2_000_000_000},
        "cells": [
            {
                "optimizer": "adamw",
                "model_size": "2b",
                "chinchilla": 1,
                "min_loss": 3.0,
                "best_config": {"learning_rate": 2e-3, "weight_decay": 0.1},
                "runs": [
                    {"config": {"learning_rate": 2e-3, "weight_decay": 0.1}, "loss": 3.0},  # the best again
                    {"config": {"learning_rate": 4e-3, "weight_decay": 0.1}, "loss": 3.002},  # a near-tie
                    {"config": {"learning_rate": 1e-3, "weight_decay": 0.1}, "loss": 3.05},
                    {"config": {"learning_rate": 8e-3, "weight_decay": 0.1}, "loss": None},  # diverged
                    {"config": {"learning_rate": 2e-3, "weight_decay": 0.0}, "loss": 3.01},
                    {"config": {"learning_rate": 2e-3, "weight_decay": 0.1}, "loss": 3.0, "seed": 1},
                ],
            },
            {"optimizer": "muon", "model_size": "7b", "chinchilla": 0.5, "min_loss": 2.5, "best_config": {"lr": 1e-3}},
        ],
    }
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(payload))
    return path


def test_unknown_scales_and_other_runs_are_imported(db: Database, tmp_path: Path) -> None:
    outcome = import_file(db, _custom(tmp_path))
    assert outcome.created and outcome.name == "my release"
    assert outcome.unknown_scales == ("2b", "7b") and outcome.unknown_params == ("7b",)
    assert outcome.n_cells == 2 and outcome.n_trials == 1 + 5 + 1  # the best listed again is stored once
    with db.session() as s:
        cells = {c.key: c for c in repo.cells_of(s, outcome.sweep_id)}
        frame = results.sweep_trials(s, outcome.sweep_id, scale_params())
        curves = results.sweep_curves(s, outcome.sweep_id)
    big = cells["adamw/2b/1"]
    assert big.best_loss == 3.0 and big.best_config == {"lr": 2e-3, "wd": 0.1}
    assert big.near_ties == [{"lr": 2e-3, "wd": 0.1}, {"lr": 4e-3, "wd": 0.1}]  # within 3e-3 (PAPER.md sec. 4)
    assert cells["muon/7b/0.5"].settings.get("non_embedding_params") is None
    assert all(not c.curves for c in curves)  # released results have no curves
    at_2b = frame[frame["scale"] == "2b"]
    assert set(at_2b["non_embedding_params"]) == {2e9}  # from the file: the catalog has no 2b
    assert math.isnan(frame[frame["scale"] == "7b"]["non_embedding_params"].iloc[0])
    assert sorted(at_2b["status"]) == ["completed"] * 5 + ["diverged"]
    assert set(at_2b["tokens"]) == {20 * 2e9}
    # The other runs feed the sensitivity table: one-at-a-time changes from the best config (mean of 2 seeds).
    sens = analysis.sensitivity(frame)
    lr = sens[sens["hparam"] == "lr"].set_index("value")
    assert lr.loc[8e-3, "diverged"] and lr.loc[1e-3, "loss"] == pytest.approx(3.05)
    assert sens[sens["hparam"] == "wd"]["loss"].tolist() == [pytest.approx(3.01)]
    best = analysis.best_per_cell(frame, n_boot=0).set_index("scale")
    assert best.loc["2b", "best_n_seeds"] == 2 and best.loc["2b", "n_near_ties"] == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ('{"cells": []}', "needs a non-empty 'cells' list"),
        ('{"cells": [1]}', "cells[0]: must be an object"),
        ('{"cells": [{"optimizer": "adamw", "model_size": "130m", "chinchilla": -1, "min_loss": 3,'
         ' "best_config": {"lr": 1}}]}', "cells[0].chinchilla: must be a positive number"),
        ('{"cells": [{"optimizer": "adamw", "model_size": "130m", "chinchilla": 1, "min_loss": "x",'
         ' "best_config": {"lr": 1}}]}', "cells[0].min_loss: must be a number"),
        ('{"cells": [{"optimizer": "adamw", "model_size": "130m", "chinchilla": 1, "min_loss": 3,'
         ' "best_config": {}}]}', "cells[0].best_config: must be a non-empty object"),
        ('{"cells": [{"optimizer": "' + "x" * 65 + '", "model_size": "130m", "chinchilla": 1, "min_loss": 3,'
         ' "best_config": {"lr": 1}}]}', "cells[0].optimizer: must be a non-empty name of at most 64"),
        ('{"non_embedding_params": {"130m": -5}, "cells": [{"optimizer": "adamw", "model_size": "130m",'
         ' "chinchilla": 1, "min_loss": 3, "best_config": {"lr": 1}}]}', "non_embedding_params.130m"),
        ('{"cells": [{"optimizer": "adamw", "model_size": "130m", "chinchilla": 1, "min_loss": 3,'
         ' "best_config": {"lr": 1}}, {"optimizer": "adamw", "model_size": "130m", "chinchilla": 1.0,'
         ' "min_loss": 3.1, "best_config": {"lr": 2}}]}', "cell adamw/130m/1 appears twice"),
    ],
)  # fmt: skip
def test_a_malformed_file_is_a_clear_error_and_writes_nothing(tmp_path: Path, content: str, message: str) -> None:
    # The file is checked before anything is written, so one database kind is enough here.
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    upgrade(url)
    db = Database(url)
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)):
        import_results(db, path)
    assert _counts(db) == (0, 0, 0)
    db.dispose()


def test_resolve_path() -> None:
    assert resolve_path("paper") == PAPER_RESULTS and PAPER_RESULTS.is_file()
    assert resolve_path("x/paper.json") == Path("x/paper.json")


# ---- the command ------------------------------------------------------------------------------------------


@pytest.fixture
def cli_db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield db_url
    get_settings.cache_clear()


def test_import_results_command(cli_db: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["import-results", "paper"]) == 0
    out, err = capsys.readouterr()
    sweep_id = int(out.strip())
    assert f"sweep {sweep_id} 'paper results (arXiv 2509.02046)': imported 134 cells, 134 trials" in err
    assert "scales 130m, 300m, 520m" in err and "chinchilla 1, 2, 4, 8, 16" in err
    assert main(["import-results", str(PAPER_RESULTS)]) == 0
    out, err = capsys.readouterr()
    assert int(out.strip()) == sweep_id and "already imported" in err
    db = Database(cli_db)
    try:
        assert _counts(db) == (1, 134, 134)
    finally:
        db.dispose()

    assert main(["import-results", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert "missing.json: file not found" in err and err.count("\n") == 1 and "Traceback" not in err
    assert main(["import-results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a directory; pass the results JSON file in it" in err and "Traceback" not in err
