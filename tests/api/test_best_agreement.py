"""`sweep-service best` and GET /best on one database give the same answer (issue 15: both call
sweep_service.service.best). The database: the shipped paper results imported with `import-results paper`, and a
small sweep written through db.repository whose cells are still running: one ranked only from its finished trials
beats the paper's best of its group, one is a group of its own, and one has a recorded best the paper beats.
Before the service layer the CLI skipped cells without a recorded best, and this test failed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_builders import make_settings
from fastapi.testclient import TestClient

from api.app import create_app
from db import repository as repo
from db.session import Database
from sweep_service.cli import main
from sweep_service.settings import get_settings

# (optimizer/scale/chinchilla) -> [(lr, seed, status, final loss)]; none of these cells has a recorded best.
RUNNING = {
    "adamw/130m/1": [(1e-3, 0, "completed", 3.40), (1e-3, 1, "completed", 3.44), (2e-3, 0, "running", None)],
    "lion/tiny-130k/1": [(1e-4, 0, "completed", 4.10), (3e-4, 0, "diverged", None)],
}
RECORDED = ("muon/130m/1", 3.50)  # worse than the paper's 3.4626: the paper's cell wins there


def write_running_sweep(db: Database) -> int:
    with db.session() as s:
        sweep = repo.create_sweep(s, "ours", {"name": "ours"})
        assert repo.set_sweep_status(s, sweep.id, ["queued"], "running")
        for key, trials in RUNNING.items():
            optimizer, scale, multiple = key.split("/")
            cell = repo.add_cell(
                s,
                sweep.id,
                key=key,
                optimizer=optimizer,
                scale=scale,
                chinchilla=float(multiple),
                strategy="coordinate_descent",
                space={},
                settings={"tolerance": 3e-3},
                status="running",
            )
            for lr, seed, status, loss in trials:
                trial = repo.add_trial(s, cell, {"lr": lr}, {"lr": lr}, seed, 1)
                assert trial is not None
                assert repo.transition_trial(s, trial.id, ["pending"], "running")
                if status != "running":
                    assert repo.transition_trial(s, trial.id, ["running"], status, final_loss=loss)
        key, loss = RECORDED
        optimizer, scale, multiple = key.split("/")
        repo.add_cell(
            s,
            sweep.id,
            key=key,
            optimizer=optimizer,
            scale=scale,
            chinchilla=float(multiple),
            strategy="coordinate_descent",
            space={},
            status="converged",
            best_loss=loss,
            best_config={"lr": 0.02},
            near_ties=[{"lr": 0.02}],
        )
        return int(sweep.id)


@pytest.fixture
def url(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield db_url
    get_settings.cache_clear()


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def test_the_cli_and_the_api_name_the_same_best_for_every_cell(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import-results", "paper"]) == 0
    paper_id = int(capsys.readouterr().out)
    db = Database(url)
    try:
        ours = write_running_sweep(db)
    finally:
        db.dispose()
    app = create_app(url, make_settings(tmp_path))
    with TestClient(app) as client:
        api = client.get("/best").json()["results"]
        single = client.get("/best", params={"scale": "130m", "chinchilla": 1}).json()["results"]
        by_optimizer = client.get("/best", params={"optimizer": "lion"}).json()["results"]
    app.state.db.dispose()

    from_cli = cli(capsys, "best", "--json")
    assert len(api) == len(from_cli) == 135  # the paper's 134 groups and lion/tiny-130k/1
    for a, c in zip(api, from_cli, strict=True):
        group = (a["optimizer"], a["scale"], a["chinchilla"])
        assert (c["optimizer"], c["scale"], c["chinchilla"]) == group
        assert (c["config"], c["loss"], c["sweep_id"], c["trial_id"]) == (
            a["config"],
            a["loss"],
            a["sweep_id"],
            a["trial_id"],
        ), group
        assert (c["near_ties"], c["cells_considered"]) == (a["near_ties"], a["cells_considered"]), group
    winners = {(r["optimizer"], r["scale"], r["chinchilla"]): r for r in api}
    adamw = winners[("adamw", "130m", 1.0)]  # ranked from its finished trials: mean of seeds 0 and 1
    assert (adamw["sweep_id"], adamw["config"], adamw["loss"]) == (ours, {"lr": 1e-3}, pytest.approx(3.42))
    assert winners[("lion", "tiny-130k", 1.0)]["sweep_id"] == ours
    assert winners[("muon", "130m", 1.0)]["sweep_id"] == paper_id
    assert winners[("muon", "130m", 1.0)]["cells_considered"] == 2

    # Filtered, and the CLI's one answer at a scale and multiple: the lowest loss of the API's rows there.
    assert cli(capsys, "best", "--optimizer", "lion", "--json") == by_optimizer
    one = cli(capsys, "best", "--scale", "130m", "--chinchilla", "1", "--json")
    lowest = min(single, key=lambda r: r["loss"])
    assert (one["optimizer"], one["config"], one["loss"], one["sweep_id"]) == (
        "adamw",
        lowest["config"],
        lowest["loss"],
        ours,
    )
    assert one["cells_considered"] == sum(r["cells_considered"] for r in single)

    # The table names the same loss per row.
    assert main(["best", "--optimizer", "adamw", "--scale", "130m"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:-1]
    assert [row.split()[3] for row in rows] == [
        f"{r['loss']:.4f}" for r in api if (r["optimizer"], r["scale"]) == ("adamw", "130m")
    ]
