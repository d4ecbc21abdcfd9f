"""sweep_service.service.exports: a sweep's trials as a table and as CSV/Parquet/JSON bytes, and the CLI's
`export`, which writes the same bytes as GET /sweeps/{id}/export (tests/api/test_export.py reads those back)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from service_builders import add_sweep

from db.session import Database
from sweep_service.cli import main
from sweep_service.service import exports
from sweep_service.service.errors import Invalid, NotFound
from sweep_service.settings import get_settings


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def add(db: Database) -> tuple[int, list[int]]:
    sweep_id, _, trials = add_sweep(
        db,
        "s",
        {
            "adamw/tiny-130k/1": [
                ({"lr": 1e-3, "nesterov": True}, 0, "completed", 3.1),
                ({"lr": 2e-3}, 1, "running", None),
            ],
            "muon/tiny-130k/1": [({"lr": 2e-2, "schedule": "wsd"}, 0, "diverged", None)],
        },
    )
    return sweep_id, trials


def test_rows_are_the_trials_oldest_first_with_config_columns(db: Database) -> None:
    sweep_id, trials = add(db)
    table = exports.rows(db, sweep_id)
    assert table.columns == (*exports.COLUMNS, "config.lr", "config.nesterov", "config.schedule")
    assert [r["trial_id"] for r in table.records] == trials
    assert [r["status"] for r in table.records] == ["completed", "running", "diverged"]
    assert table.records[0]["config.lr"] == 1e-3 and "config.schedule" not in table.records[0]
    assert table.records[2]["cell"] == "muon/tiny-130k/1" and table.records[1]["seed"] == 1


@pytest.mark.parametrize("fmt", exports.FORMATS)
def test_each_format_reads_back(db: Database, fmt: str) -> None:
    sweep_id, trials = add(db)
    out = exports.export(db, sweep_id, fmt)
    assert (out.media_type, out.filename) == (exports.MEDIA_TYPES[fmt], f"sweep-{sweep_id}-trials.{fmt}")
    if fmt == "csv":
        frame = pd.read_csv(io.BytesIO(out.body))
    elif fmt == "parquet":
        frame = pd.read_parquet(io.BytesIO(out.body))
    else:
        frame = pd.DataFrame(json.loads(out.body))
    assert list(frame["trial_id"]) == trials and frame["final_loss"].iloc[0] == pytest.approx(3.1)


def test_a_missing_sweep_and_an_unknown_format_are_errors(db: Database) -> None:
    with pytest.raises(NotFound, match="no sweep 99"):
        exports.export(db, 99)
    sweep_id, _ = add(db)
    with pytest.raises(Invalid) as caught:
        exports.export(db, sweep_id, "xlsx")
    assert caught.value.field == "format" and "csv, parquet, json" in caught.value.message


def test_the_export_command_writes_the_use_case_s_bytes(
    db: Database,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        sweep_id, _ = add(db)
        assert main(["export", str(sweep_id), "--format", "json"]) == 0
        assert capsysbinary.readouterr().out == exports.export(db, sweep_id, "json").body
        target = tmp_path / "t.parquet"
        assert main(["export", str(sweep_id), "--format", "parquet", "--out", str(target)]) == 0
        assert target.read_bytes() == exports.export(db, sweep_id, "parquet").body
        assert main(["export", "99"]) == 2
        assert b"no sweep 99 (sweep-service status lists them)" in capsysbinary.readouterr().err
    finally:
        get_settings.cache_clear()
