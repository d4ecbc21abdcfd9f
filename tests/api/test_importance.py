"""GET /sweeps/{id}/importance (api/routers/importance.py, sweep_service/importance.py): per cell, the share
of the loss variance each hyperparameter's main effect explains."""

from __future__ import annotations

from typing import Any

import pytest
from api_builders import T
from fastapi.testclient import TestClient


def _grid(loss: Any) -> list[T]:
    return [T({"lr": lr, "wd": wd, "warmup": 100}, loss=loss(lr, wd)) for lr in (1e-3, 2e-3, 4e-3) for wd in (0.0, 0.1)]


def test_the_hyperparameter_that_moves_the_loss_is_the_important_one(client: TestClient, store: Any) -> None:
    # lr moves the loss by 0.1 a step; wd by 0.001: lr explains nearly all of the variance, warmup (fixed) none.
    stored = store(
        {
            "adamw/130m/1": _grid(lambda lr, wd: 3.5 + {1e-3: 0.1, 2e-3: 0.0, 4e-3: 0.2}[lr] + wd / 100),
            "muon/130m/1": _grid(lambda lr, wd: 3.4 + wd),  # here wd is everything and lr nothing
        }
    )
    body = client.get(f"/sweeps/{stored.sweep_id}/importance").json()
    by_cell = {c["cell"]: c for c in body["cells"]}
    adamw = by_cell["adamw/130m/1"]
    assert [r["hparam"] for r in adamw["rows"]] == ["lr", "wd"]  # warmup is fixed: not listed
    assert adamw["rows"][0]["importance"] > 0.99 and adamw["rows"][1]["importance"] < 0.01
    assert adamw["rows"][0]["n_values"] == 3 and adamw["n_trials"] == 6
    muon = by_cell["muon/130m/1"]
    assert muon["rows"][0]["hparam"] == "wd" and muon["rows"][0]["importance"] == pytest.approx(1.0)
    assert muon["rows"][1]["importance"] == pytest.approx(0.0, abs=1e-9)
    assert muon["unexplained"] == pytest.approx(0.0, abs=1e-9)

    one = client.get(f"/sweeps/{stored.sweep_id}/importance", params={"cell": "muon/130m/1"}).json()
    assert [c["cell"] for c in one["cells"]] == ["muon/130m/1"]


def test_diverged_trials_count_as_the_worst_loss(client: TestClient, store: Any) -> None:
    trials = [T({"lr": 1e-3}, loss=3.5), T({"lr": 1e-3}, loss=3.51, seed=1), T({"lr": 1e-1}, status="diverged")]
    stored = store({"adamw/130m/1": trials})
    cell = client.get(f"/sweeps/{stored.sweep_id}/importance").json()["cells"][0]
    assert cell["n_trials"] == 3 and cell["rows"][0]["hparam"] == "lr"
    assert 0 < cell["rows"][0]["importance"] <= 1


def test_unknown_sweep_or_cell_is_404_and_a_bad_query_422(client: TestClient, store: Any) -> None:
    stored = store({"adamw/130m/1": _grid(lambda lr, wd: 3.5)})
    assert client.get("/sweeps/999/importance").status_code == 404
    r = client.get(f"/sweeps/{stored.sweep_id}/importance", params={"cell": "nope/1/1"})
    assert r.status_code == 404 and "nope/1/1" in r.json()["detail"]
    assert client.get(f"/sweeps/{stored.sweep_id}/importance", params={"cell": ""}).status_code == 422
    # a constant loss: nothing to explain, every importance 0
    cell = client.get(f"/sweeps/{stored.sweep_id}/importance").json()["cells"][0]
    assert all(r["importance"] == 0 for r in cell["rows"])
