"""GET /sweeps/{id}/trials, GET /trials/{id}, GET /trials/{id}/metrics."""

from __future__ import annotations

import math
from typing import Any

import pytest
from api_builders import T
from fastapi.testclient import TestClient

from db import repository as repo
from db.session import Database


@pytest.fixture
def two_cells(store: Any) -> Any:
    return store(
        {
            "adamw/tiny-130k/1": [
                T(
                    {"lr": 1e-3, "wd": 0.1},
                    loss=3.1,
                    seconds=12,
                    curve=[(50, 3.4, 3.5), (0, 5.5, None), (100, 3.1, 3.2)],
                ),
                T({"lr": 2e-3, "wd": 0.1}, status="diverged", reason="eval loss nan at step 40"),
                T({"lr": 4e-3, "wd": 0.1}, status="pending"),
            ],
            "adamw/tiny-300k/2": [
                T({"lr": 1e-3, "wd": 0.1}, loss=2.9),
                T({"lr": 1e-3, "wd": 0.1}, loss=2.95, seed=1),
            ],
            "muon/tiny-130k/1": [T({"lr": 2e-2}, status="failed", reason="worker died: OOM")],
        }
    )


def ids(page: dict[str, Any]) -> list[int]:
    return [t["id"] for t in page["items"]]


def test_trials_filter_by_status_cell_optimizer_scale_and_multiple(client: TestClient, two_cells: Any) -> None:
    sid, t = two_cells.sweep_id, two_cells.trials
    url = f"/sweeps/{sid}/trials"
    everything = client.get(url).json()
    assert ids(everything) == t and everything["total"] == 6
    assert ids(client.get(url, params={"status": "completed"}).json()) == [t[0], t[3], t[4]]
    assert ids(client.get(url, params={"cell": "adamw/tiny-300k/2"}).json()) == [t[3], t[4]]
    assert ids(client.get(url, params={"optimizer": "muon"}).json()) == [t[5]]
    assert ids(client.get(url, params={"scale": "tiny-130k", "optimizer": "adamw"}).json()) == t[:3]
    assert ids(client.get(url, params={"chinchilla": 2}).json()) == [t[3], t[4]]
    assert ids(client.get(url, params={"status": "completed", "scale": "tiny-130k"}).json()) == [t[0]]
    assert client.get(url, params={"optimizer": "nope"}).json() == {"items": [], "total": 0, "limit": 50, "offset": 0}
    page = client.get(url, params={"limit": 2, "offset": 3}).json()
    assert ids(page) == t[3:5] and page["total"] == 6
    for params in ({"status": "done"}, {"chinchilla": 0}, {"chinchilla": "nan"}, {"cell": "a\x00b"}, {"limit": 0}):
        assert client.get(url, params=params).status_code == 422, params
    row = everything["items"][1]
    assert row["status"] == "diverged" and row["final_loss"] is None and row["reason"] == "eval loss nan at step 40"
    assert row["cell"] == "adamw/tiny-130k/1" and row["config"] == {"lr": 2e-3, "wd": 0.1}


def test_a_trial_carries_its_config_result_reproducibility_and_timings(client: TestClient, two_cells: Any) -> None:
    body = client.get(f"/trials/{two_cells.trials[0]}").json()
    assert body["config"] == {"lr": 1e-3, "wd": 0.1}
    assert body["status"] == "completed" and body["final_loss"] == pytest.approx(3.1) and body["reason"] is None
    assert body["initial_loss"] == pytest.approx(5.5) and body["attempts"] == 1 and body["seed"] == 0
    assert body["repro"]["torch"] == "2.13.0" and body["repro"]["data"] == {"sha256": "abc"}
    assert body["timings"]["duration_seconds"] == pytest.approx(12.0)
    assert body["timings"]["device_seconds"] == pytest.approx(12.0)
    assert body["timings"]["started_at"].startswith("2025-01-01T12:00:00")
    assert body["worker"] == "w1" and body["tokens"] == 100 * 32 * 128

    failed = client.get(f"/trials/{two_cells.trials[5]}").json()
    assert failed["status"] == "failed" and failed["reason"] == "worker died: OOM" and failed["optimizer"] == "muon"
    pending = client.get(f"/trials/{two_cells.trials[2]}").json()
    assert pending["timings"]["started_at"] is None and pending["timings"]["duration_seconds"] is None


def test_metrics_are_the_loss_curve_in_step_order(client: TestClient, two_cells: Any, db: Database) -> None:
    body = client.get(f"/trials/{two_cells.trials[0]}/metrics").json()
    assert [p["step"] for p in body["points"]] == [0, 50, 100]
    assert [p["eval_loss"] for p in body["points"]] == pytest.approx([5.5, 3.4, 3.1])
    assert body["points"][0]["train_loss"] is None and body["status"] == "completed"
    assert client.get(f"/trials/{two_cells.trials[2]}/metrics").json()["points"] == []

    # A diverging run reports an infinite loss: JSON cannot carry it, so it is null (never a 500).
    diverged = two_cells.trials[1]
    with db.session() as s:
        repo.add_curve_points(s, diverged, [(10, math.inf, math.inf), (20, 4.0, -math.inf)])
    points = client.get(f"/trials/{diverged}/metrics").json()["points"]
    assert points == [
        {"step": 10, "eval_loss": None, "train_loss": None},
        {"step": 20, "eval_loss": 4.0, "train_loss": None},
    ]


def test_pages_walk_the_trials_in_order_with_the_total(client: TestClient, two_cells: Any) -> None:
    # The page's ids come from the index first, then its rows; the last page and pages past the end keep the total.
    sid, t = two_cells.sweep_id, two_cells.trials
    url = f"/sweeps/{sid}/trials"
    pages = [client.get(url, params={"limit": 4, "offset": offset}).json() for offset in (0, 4, 8)]
    assert [ids(p) for p in pages] == [t[:4], t[4:], []]
    assert [p["total"] for p in pages] == [6, 6, 6]
    completed = client.get(url, params={"status": "completed", "limit": 2, "offset": 1}).json()
    assert ids(completed) == [t[3], t[4]] and completed["total"] == 3
    by_cell = client.get(url, params={"optimizer": "adamw", "limit": 1, "offset": 4}).json()
    assert ids(by_cell) == [t[4]] and by_cell["total"] == 5
    past = client.get(url, params={"cell": "adamw/tiny-300k/2", "offset": 5}).json()
    assert past["items"] == [] and past["total"] == 2
    assert client.get(f"/sweeps/{sid + 1}/trials", params={"status": "completed"}).status_code == 404
