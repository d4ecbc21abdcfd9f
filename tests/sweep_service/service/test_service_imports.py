"""sweep_service.service.imports: released results as a finished, imported sweep (the file format's checks are
tests/sweep_service/test_importer.py's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from db import repository as repo
from db.session import Database
from sweep_service.importer import PAPER_RESULTS
from sweep_service.service import best, imports
from sweep_service.service.errors import Invalid


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def test_the_paper_results_once_whatever_the_path(db: Database) -> None:
    outcome = imports.import_results(db, "paper")
    assert outcome.created and (outcome.n_cells, outcome.n_trials) == (134, 134)
    assert outcome.name == "paper results (arXiv 2509.02046)"
    assert outcome.scales[:3] == ("130m", "300m", "520m") and outcome.chinchilla == (1.0, 2.0, 4.0, 8.0, 16.0)
    assert outcome.unknown_scales == () and outcome.unknown_params == ()
    again = imports.import_results(db, PAPER_RESULTS)
    assert not again.created and again.sweep_id == outcome.sweep_id
    with db.session() as s:
        sweep = repo.get_sweep(s, outcome.sweep_id)
        assert sweep is not None and sweep.imported and sweep.status == "completed"
    rows = best.best(db)  # every imported cell has a recorded best
    assert len(rows) == 134 and {r.sweep_id for r in rows} == {outcome.sweep_id}


def test_a_bad_file_is_invalid_and_writes_nothing(db: Database, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"cells": [{"optimizer": "adamw", "model_size": "130m", "chinchilla": 0}]}')
    for path, words in (
        (bad, "bad.json: cells[0].chinchilla: must be a positive number"),
        (tmp_path, "is a directory"),
    ):
        with pytest.raises(Invalid) as caught:
            imports.import_results(db, path)
        assert caught.value.field == "file" and words in caught.value.message, caught.value.message
    with db.session() as s:
        assert repo.list_sweeps(s, limit=10) == []
