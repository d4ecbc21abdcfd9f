"""The API's and the CLI's status of the same sweeps agree: `GET /sweeps` and `sweep-service status`, `GET
/sweeps/{id}` and `sweep-service status ID`, on one database (both call sweep_service.service.sweeps)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from db import repository as repo
from db.session import Database
from sweep_service.cli import main
from sweep_service.settings import get_settings
from tests.api.api_builders import T, make_settings


@pytest.fixture
def both(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """An API client on `db_url`, and the CLI's settings pointed at the same database."""
    monkeypatch.setenv("SWEEP_HOME", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", db_url)
    get_settings.cache_clear()
    app = create_app(db_url, make_settings(tmp_path))
    with TestClient(app) as client:
        yield client
    app.state.db.dispose()
    get_settings.cache_clear()


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert main(["status", *args]) == 0
    return capsys.readouterr().out.splitlines()


def sweep_line(line: str) -> tuple[int, str, int, dict[str, int]]:
    """`sweep ID NAME STATUS N cells; trials: completed 2, running 1` -> (id, status, cells, trial counts)."""
    head, _, trials = line.partition(" cells; trials: ")
    words = head.split()
    counts = {} if trials == "no trials" else {k: int(v) for k, v in (p.split() for p in trials.split(", "))}
    return int(words[1]), words[-2], int(words[-1]), counts


def api_counts(trials: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in trials.items() if k != "total" and v}


def test_the_api_and_the_cli_show_the_same_status(
    both: TestClient, db_url: str, store: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    running = store(
        {
            "adamw/tiny-130k/1": [
                T({"lr": 1e-3}, loss=3.1),
                T({"lr": 2e-3}, loss=3.0),
                T({"lr": 4e-3}, status="diverged"),
                T({"lr": 8e-3}, status="running"),
            ],
            "muon/tiny-130k/1": [T({"lr": 1e-2}, loss=2.9), T({"lr": 2e-2}, status="pending")],
            "lion/tiny-130k/1": [T({"lr": 1e-4}, status="failed", reason="worker died")],
        },
        name="running one",
    )
    store({"adamw/tiny-130k/1": [T({"lr": 1e-3}, loss=3.2)]}, name="done", status="completed")
    with Database(db_url).session() as s:
        repo.set_sweep_status(s, running.sweep_id, ["running"], "running", error="waiting for resources: 1 GPU")

    listed = both.get("/sweeps").json()["items"]
    lines = [line for line in cli(capsys) if line.startswith("sweep ")]
    assert [sweep_line(line)[0] for line in lines] == [sw["id"] for sw in listed]
    for line, sw in zip(lines, listed, strict=True):
        _, status, _, counts = sweep_line(line)
        assert (status, counts) == (sw["status"], api_counts(sw["trials"]))
        assert sw["name"] in line

    detail = both.get(f"/sweeps/{running.sweep_id}").json()
    out = cli(capsys, str(running.sweep_id))
    sweep_id, status, n_cells, counts = sweep_line(out[0])
    assert (sweep_id, status, n_cells) == (detail["id"], detail["status"], len(detail["cells"]))
    assert counts == api_counts(detail["trials"]) and out[1].strip() == detail["error"]
    table = out[out.index("") + 2 :]  # after the blank line and the table's header
    assert len(table) == len(detail["cells"]) == 3
    for row, cell in zip(table, detail["cells"], strict=True):
        key, cell_status, trials, loss = row.split()[:4]
        assert (key, cell_status, int(trials)) == (cell["key"], cell["status"], cell["trials"]["total"])
        api_loss = cell["best_loss"]
        assert loss == ("-" if api_loss is None else f"{api_loss:.4f}")
