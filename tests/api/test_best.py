"""GET /best across sweeps (imported ones too), and the whole path: POST /sweeps -> engine -> GET /best."""

from __future__ import annotations

import math
from typing import Any

import pytest
from api_builders import T, quickstart
from fastapi.testclient import TestClient

from db import repository as repo
from db.session import Database
from sweep_service.engine import SweepDriver
from workers.model import SCALES, non_embedding_params
from workers.optimizers import REGISTRY


def test_best_is_the_lowest_loss_cell_across_all_sweeps(client: TestClient, store: Any) -> None:
    ours = store(
        {
            "adamw/tiny-130k/1": [T({"lr": 1e-3}, loss=3.20), T({"lr": 2e-3}, loss=3.05)],
            "adamw/tiny-300k/1": [T({"lr": 1e-3}, loss=2.80)],
        }
    )
    imported = store(
        {"adamw/tiny-130k/1": [T({"lr": 4e-3}, loss=3.01), T({"lr": 8e-3}, loss=3.012), T({"lr": 1.6e-2}, loss=3.5)]},
        name="paper import",
        status="completed",
        imported=True,
    )
    store({"muon/tiny-130k/1": [T({"lr": 2e-2}, loss=2.5)]})

    body = client.get("/best", params={"optimizer": "adamw", "scale": "tiny-130k", "chinchilla": 1}).json()
    (best,) = body["results"]
    assert best["loss"] == pytest.approx(3.01) and best["config"] == {"lr": 4e-3}
    assert best["sweep_id"] == imported.sweep_id and best["imported"] is True and best["sweep_name"] == "paper import"
    assert best["trial_id"] == imported.trials[0]
    assert best["near_ties"] == [{"lr": 4e-3}, {"lr": 8e-3}]
    assert best["cells_considered"] == 2 and best["cell"] == "adamw/tiny-130k/1"
    assert best["non_embedding_params"] == non_embedding_params(SCALES["tiny-130k"])

    per_scale = client.get("/best", params={"optimizer": "adamw"}).json()["results"]
    assert [(r["scale"], r["sweep_id"]) for r in per_scale] == [
        ("tiny-130k", imported.sweep_id),  # smallest scale first
        ("tiny-300k", ours.sweep_id),
    ]
    everything = client.get("/best").json()["results"]
    assert [(r["optimizer"], r["scale"]) for r in everything] == [
        ("adamw", "tiny-130k"),
        ("adamw", "tiny-300k"),
        ("muon", "tiny-130k"),
    ]
    assert client.get("/best", params={"scale": "tiny-1.2m"}).json() == {"results": []}


def test_unknown_names_list_the_valid_ones(client: TestClient) -> None:
    r = client.get("/best", params={"optimizer": "adamx"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "optimizer" and all(
        n in r.json()["errors"][0]["message"] for n in REGISTRY
    )
    r = client.get("/best", params={"scale": "huge"})
    assert r.status_code == 422 and "tiny-130k" in r.json()["errors"][0]["message"]
    for params in ({"chinchilla": -1}, {"chinchilla": "inf"}, {"optimizer": ""}):
        assert client.get("/best", params=params).status_code == 422, params


def test_names_outside_the_catalog_that_imported_results_hold_are_valid_filters(client: TestClient, store: Any) -> None:
    imported = store({"foo/2b/1": [T({"lr": 1e-3}, loss=2.4)]}, name="someone's import", imported=True)
    for params in ({"scale": "2b"}, {"optimizer": "foo"}, {"optimizer": "foo", "scale": "2b", "chinchilla": 1}):
        r = client.get("/best", params=params)
        assert r.status_code == 200, (params, r.text)
        (row,) = r.json()["results"]
        assert (row["optimizer"], row["scale"], row["sweep_id"]) == ("foo", "2b", imported.sweep_id)
    r = client.get("/best", params={"scale": "3b"})  # held by no cell and not in the catalog: still unknown
    assert r.status_code == 422
    assert "tiny-130k" in r.json()["errors"][0]["message"] and "2b" in r.json()["errors"][0]["message"]


def test_a_cell_whose_best_is_not_recorded_yet_is_ranked_from_its_trials(client: TestClient, store: Any) -> None:
    # Two seeds per config: the engine records a config's mean only when all its seeds finished. The API
    # ranks what has finished by the same rules (analysis.best_per_cell): mean over seeds, diverged = +inf.
    stored = store(
        {
            "lion/tiny-130k/1": [
                T({"lr": 1e-4}, loss=3.30, seed=0),
                T({"lr": 1e-4}, loss=3.10, seed=1),
                T({"lr": 3e-4}, loss=3.15, seed=0),
                T({"lr": 3e-4}, status="diverged", seed=1),
                T({"lr": 1e-3}, loss=3.202, seed=0),
                T({"lr": 1e-3}, status="running", seed=1),
            ]
        },
        record_best=False,
    )
    (best,) = client.get("/best", params={"optimizer": "lion"}).json()["results"]
    assert best["config"] == {"lr": 1e-4} and best["loss"] == pytest.approx(3.20)  # mean of 3.30 and 3.10
    assert best["near_ties"] == [{"lr": 1e-4}, {"lr": 1e-3}]  # 3.202 (one seed so far) is within 3e-3
    assert best["trial_id"] == stored.trials[1]  # the config's best seed


def test_only_divergence_is_no_best(client: TestClient, store: Any) -> None:
    store({"sophia/tiny-130k/1": [T({"lr": 1e-2}, status="diverged")]}, record_best=False)
    assert client.get("/best", params={"optimizer": "sophia"}).json() == {"results": []}


# ---- end to end: REST -> engine (synthetic objective, no Ray) -> REST ---------------------------------------

LR = [3e-3, 6e-3, 1.2e-2, 2.4e-2]


def objective(config: dict[str, Any]) -> float:
    """A valley with its minimum at lr 1.2e-2; lr 2.4e-2 diverges."""
    if config["lr"] == 2.4e-2:
        return math.inf
    return 3.0 + math.log2(config["lr"] / 1.2e-2) ** 2 * 0.05


def run_to_the_end(driver: SweepDriver) -> int:
    """Hand out and finish trials like Ray Tune would; returns how many ran."""
    for done in range(100):
        nxt = driver.next_trial()
        if nxt == "FINISHED":
            return done
        assert isinstance(nxt, dict)
        loss = objective(nxt["run"]["hparams"])
        driver.record_eval(nxt["trial_id"], 10, min(loss, 9.0), None)
        status = "completed" if math.isfinite(loss) else "diverged"
        driver.record_final(
            nxt["trial_id"],
            {"kind": "final", "status": status, "final_eval_loss": loss, "steps": 10, "wall_seconds": 2.0},
        )
    raise AssertionError("the sweep did not finish")


def test_a_sweep_submitted_over_rest_runs_and_its_best_is_served(client: TestClient, db: Database) -> None:
    search = {"adamw": {"tune": ["lr"], "grid": {"lr": LR}, "baseline": {"lr": 3e-3}}}
    sweep_id = client.post("/sweeps", json=quickstart(search=search)).json()["id"]
    driver = SweepDriver(db, sweep_id)
    driver.prepare()
    n = run_to_the_end(driver)

    body = client.get(f"/sweeps/{sweep_id}").json()
    (cell,) = body["cells"]
    assert cell["status"] == "converged" and cell["best_config"]["lr"] == 1.2e-2
    assert cell["trials"]["total"] == n and cell["trials"]["diverged"] == 1
    assert body["device_hours"] == pytest.approx(2.0 * n / 3600)
    (best,) = client.get("/best", params={"optimizer": "adamw", "scale": "tiny-130k"}).json()["results"]
    assert best["config"]["lr"] == 1.2e-2 and best["loss"] == pytest.approx(3.0)
    assert best["config"]["beta2"] == REGISTRY["adamw"].spaces["tiny"].baseline["beta2"]  # fixed values included
    trial = client.get(f"/trials/{best['trial_id']}").json()
    assert trial["config"] == best["config"] and trial["final_loss"] == pytest.approx(3.0)
    assert client.get(f"/trials/{best['trial_id']}/metrics").json()["points"][0]["eval_loss"] == pytest.approx(3.0)


def test_the_engine_stops_handing_out_trials_of_a_cancelled_sweep(client: TestClient, db: Database) -> None:
    search = {"adamw": {"tune": ["lr"], "grid": {"lr": LR}, "baseline": {"lr": 3e-3}}}
    sweep_id = client.post("/sweeps", json=quickstart(search=search)).json()["id"]
    driver = SweepDriver(db, sweep_id)
    driver.prepare()
    running = driver.next_trial()
    assert isinstance(running, dict)
    assert client.post(f"/sweeps/{sweep_id}/cancel").json()["status"] == "cancelled"
    assert driver.next_trial() == "FINISHED"
    driver.record_final(running["trial_id"], {"kind": "final", "status": "completed", "final_eval_loss": 3.0})
    trial = client.get(f"/trials/{running['trial_id']}").json()
    assert trial["status"] == "cancelled" and trial["final_loss"] is None  # the late result lost the race


# ---- the answer cache: a repeated request is served from it until the data it depends on changes ------------


def test_best_follows_every_change_it_depends_on(client: TestClient, store: Any, db: Database) -> None:
    # The engine records a cell's best in its own transaction after the trial's (SweepDriver.record_final, then
    # refresh): a cached answer must follow a new best, new near-ties, a new trial of a cell ranked from its
    # trials and a new cell, with no other change in between.
    ours = store({"adamw/tiny-130k/1": [T({"lr": 1e-3}, loss=3.2), T({"lr": 2e-3}, loss=3.1)]})
    params = {"optimizer": "adamw"}

    def best() -> dict[str, Any]:
        (result,) = client.get("/best", params=params).json()["results"]
        return dict(result)

    assert best()["loss"] == pytest.approx(3.1) and best() == best()
    cell = ours.cells["adamw/tiny-130k/1"]
    with db.session() as s:
        repo.update_cell(s, cell, best_loss=3.05, best_config={"lr": 4e-3}, best_trial_id=ours.trials[0])
    assert (best()["loss"], best()["config"], best()["trial_id"]) == (pytest.approx(3.05), {"lr": 4e-3}, ours.trials[0])
    with db.session() as s:
        repo.update_cell(s, cell, near_ties=[{"lr": 4e-3}, {"lr": 5e-3}])
    assert best()["near_ties"] == [{"lr": 4e-3}, {"lr": 5e-3}]
    with db.session() as s:
        repo.update_cell(s, cell, near_ties=[{"lr": 4e-3}, {"lr": 6e-3}])  # the same length, other contents
    assert best()["near_ties"] == [{"lr": 4e-3}, {"lr": 6e-3}]

    unranked = store({"adamw/tiny-130k/1": [T({"lr": 1e-3}, loss=3.3)]}, record_best=False, name="later")
    assert best()["sweep_id"] == ours.sweep_id and best()["cells_considered"] == 2
    with db.session() as s:
        (other,) = repo.cells_of(s, unranked.sweep_id)
        trial = repo.add_trial(s, other, {"lr": 2e-3}, {"lr": 2e-3}, 0, 1)
        assert trial is not None
        assert repo.transition_trial(s, trial.id, ["pending"], "running")
        assert repo.transition_trial(s, trial.id, ["running"], "completed", final_loss=3.0)
    assert best()["sweep_id"] == unranked.sweep_id and best()["trial_id"] == trial.id
    assert best()["sweep_name"] == "later" and best()["loss"] == pytest.approx(3.0)
