"""POST /sweeps, GET /sweeps, GET /sweeps/{id}, POST /sweeps/{id}/cancel on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from api_builders import MakeClient, Stored, T, quickstart
from fastapi.testclient import TestClient

from db import repository as repo
from db.session import Database
from workers.model import SCALES
from workers.optimizers import REGISTRY


def fields(response: Any) -> dict[str, str]:
    """field path -> message of a 422."""
    assert response.status_code == 422, response.text
    return {d["field"]: d["message"] for d in response.json()["errors"]}


def test_a_posted_spec_becomes_a_queued_sweep_a_dispatcher_can_claim(client: TestClient, db: Database) -> None:
    spec = quickstart(search={"adamw": {"tune": ["lr"], "grid": {"lr": [3e-3, 6e-3]}, "baseline": {"lr": 3e-3}}})
    r = client.post("/sweeps", json=spec)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "queued" and body["name"] == "quick"
    assert r.headers["location"] == f"/sweeps/{body['id']}"
    assert body["spec"] == spec
    assert body["trials"]["total"] == 0 and body["cells"] == [] and body["eta_seconds"] is None

    got = client.get(f"/sweeps/{body['id']}").json()
    assert got["id"] == body["id"] and got["status"] == "queued" and got["spec"] == spec
    with db.session() as s:
        assert repo.claimable_sweep_ids(s) == [body["id"]]
        assert repo.claim_sweep(s, body["id"], "dispatcher-1", 60)
    assert client.get(f"/sweeps/{body['id']}").json()["claimed_by"] == "dispatcher-1"


def test_spec_errors_name_every_bad_field_and_list_valid_names(client: TestClient) -> None:
    r = client.post("/sweeps", json=quickstart(optimizers=["adamw", "adamx"], scales=["tiny-999"]))
    errors = fields(r)
    assert set(errors) == {"optimizers.1", "scales.0"}
    assert all(name in errors["optimizers.1"] for name in REGISTRY)
    assert all(name in errors["scales.0"] for name in SCALES)
    assert r.json()["errors"][0]["loc"][0] == "body"

    errors = fields(client.post("/sweeps", json=quickstart(budget="many", bogus=1, resources={"cpu": -1})))
    assert set(errors) == {"budget", "bogus", "resources.cpu"}
    assert "Extra inputs are not permitted" in errors["bogus"]

    bad_baseline = {"adamw": {"grid": {"lr": [1e-3, 2e-3]}, "baseline": {"lr": 5e-3}}}
    errors = fields(client.post("/sweeps", json=quickstart(search=bad_baseline)))
    assert list(errors) == ["search.adamw.baseline.lr"]
    errors = fields(client.post("/sweeps", json={"name": "x"}))
    assert "optimizers" in next(iter(errors.values()))


def test_an_unknown_optimizer_is_named_with_the_other_errors_at_once(client: TestClient) -> None:
    # Issue 17: the unknown name used to appear only once the field errors were fixed (a second round).
    spec = quickstart(optimizers=["adamw", "adamx"], budget=0, cells=[{"optimizer": "nope", "scale": "tiny-999"}])
    errors = fields(client.post("/sweeps", json=spec))
    assert {"budget", "optimizers.1", "cells.0.optimizer", "cells.0.scale"} <= set(errors)


def test_an_idempotency_key_returns_the_same_sweep_on_a_retry(client: TestClient) -> None:
    headers = {"Idempotency-Key": "7f1c-retry"}
    first = client.post("/sweeps", json=quickstart(), headers=headers)
    again = client.post("/sweeps", json=quickstart(), headers=headers)
    assert first.status_code == 201 and again.status_code in (200, 201)
    assert again.json()["id"] == first.json()["id"]
    assert client.get("/sweeps").json()["total"] == 1
    other = client.post("/sweeps", json=quickstart(name="other"), headers=headers)
    assert fields(other) == {
        "Idempotency-Key": f"this key was used for sweep {first.json()['id']} with a different spec"
    }
    assert client.post("/sweeps", json=quickstart(), headers={"Idempotency-Key": "x" * 201}).status_code == 422
    fresh = client.post("/sweeps", json=quickstart())  # no key: a new sweep each time
    assert fresh.status_code == 201 and fresh.json()["id"] != first.json()["id"]


def test_list_filters_by_status_and_paginates_newest_first(client: TestClient, db: Database) -> None:
    ids = [client.post("/sweeps", json=quickstart(name=f"s{i}")).json()["id"] for i in range(5)]
    with db.session() as s:
        repo.set_sweep_status(s, ids[1], ["queued"], "running")
        repo.set_sweep_status(s, ids[3], ["queued"], "cancelled")
    page = client.get("/sweeps", params={"limit": 2}).json()
    assert [x["id"] for x in page["items"]] == [ids[4], ids[3]] and page["total"] == 5
    page = client.get("/sweeps", params={"limit": 2, "offset": 2}).json()
    assert [x["id"] for x in page["items"]] == [ids[2], ids[1]]
    queued = client.get("/sweeps", params={"status": "queued"}).json()
    assert [x["id"] for x in queued["items"]] == [ids[4], ids[2], ids[0]] and queued["total"] == 3
    assert client.get("/sweeps", params={"status": "running"}).json()["items"][0]["name"] == "s1"
    for params in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"status": "finished"}, {"limit": "ten"}):
        r = client.get("/sweeps", params=params)
        assert r.status_code == 422, params
        assert r.json()["errors"][0]["loc"][-1] == next(iter(params))


def test_progress_counts_best_compute_and_time_left(client: TestClient, store: Any) -> None:
    stored: Stored = store(
        {
            "adamw/tiny-130k/1": [
                T({"lr": 1e-3}, loss=3.10, seconds=30, curve=[(0, 5.5, None), (10, 3.2, 3.3)]),
                T({"lr": 2e-3}, loss=3.00, seconds=50),
                T({"lr": 4e-3}, loss=3.002, seconds=40),
                T({"lr": 8e-3}, status="diverged", seconds=20, reason="loss 2.1e4 above 1e4"),
                T({"lr": 1.6e-2}, status="running"),
            ],
            "muon/tiny-130k/1": [
                T({"lr": 1e-2}, loss=2.90, seconds=60),
                T({"lr": 2e-2}, status="failed", seconds=5, reason="worker died"),
                T({"lr": 4e-2}, status="pending"),
                T({"lr": 8e-2}, status="pending"),
            ],
        },
        max_concurrent=3,
    )
    body = client.get(f"/sweeps/{stored.sweep_id}").json()
    assert body["status"] == "running"
    assert body["trials"] == {
        "pending": 2,
        "running": 1,
        "completed": 4,
        "diverged": 1,
        "failed": 1,
        "cancelled": 0,
        "total": 9,
    }
    adamw, muon = body["cells"]
    assert adamw["key"] == "adamw/tiny-130k/1" and adamw["trials"]["completed"] == 3 and adamw["trials"]["running"] == 1
    assert adamw["best_loss"] == pytest.approx(3.0) and adamw["best_config"] == {"lr": 2e-3}
    assert adamw["near_ties"] == [{"lr": 2e-3}, {"lr": 4e-3}]  # 3.002 is within 3e-3 of 3.000
    assert adamw["best_trial_id"] == stored.trials[1]
    assert muon["trials"]["pending"] == 2 and muon["best_loss"] == pytest.approx(2.9)
    assert body["best"]["cell"] == "muon/tiny-130k/1" and body["best"]["config"] == {"lr": 1e-2}
    assert body["best"]["trial_id"] == stored.trials[5]
    # Device seconds are recorded for completed and diverged trials: 30 + 50 + 40 + 20 + 60.
    assert body["device_hours"] == pytest.approx(200 / 3600)
    # Mean duration of finished trials (completed, diverged, failed) x (2 pending + 1 running) / 3 slots.
    mean = (30 + 50 + 40 + 20 + 60 + 5) / 6
    assert body["max_concurrent"] == 3
    assert body["eta_seconds"] == pytest.approx(mean * 3 / 3)


def test_cancel_stops_open_trials_with_a_reason_and_keeps_results(client: TestClient, store: Any, db: Database) -> None:
    stored = store(
        {
            "adamw/tiny-130k/1": [
                T({"lr": 1e-3}, loss=3.1),
                T({"lr": 2e-3}, status="running"),
                T({"lr": 4e-3}, status="pending"),
            ]
        }
    )
    r = client.post(f"/sweeps/{stored.sweep_id}/cancel", params={"reason": "wrong grid"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "cancelled" and body["finished_at"] is not None
    assert body["trials"]["cancelled"] == 2 and body["trials"]["completed"] == 1
    assert body["cells"][0]["status"] == "cancelled"
    with db.session() as s:
        trials = repo.trials_of_sweep(s, stored.sweep_id)
        assert [t.status for t in trials] == ["completed", "cancelled", "cancelled"]
        assert trials[0].final_loss == pytest.approx(3.1) and trials[0].reason is None
        assert all(t.reason == "cancelled through the API: wrong grid" for t in trials[1:])
        # A late result from the worker loses the compare-and-set: the cancellation stands.
        assert not repo.transition_trial(s, trials[1].id, ["running"], "completed", final_loss=2.0)
    assert client.post(f"/sweeps/{stored.sweep_id}/cancel").status_code == 200  # cancelling again is harmless

    done = store({"adamw/tiny-130k/2": [T({"lr": 1e-3}, loss=3.0)]}, status="completed")
    r = client.post(f"/sweeps/{done.sweep_id}/cancel")
    assert r.status_code == 409 and "completed" in r.json()["detail"]
    assert client.post("/sweeps/424242/cancel").status_code == 404


def test_unknown_ids_are_404_and_out_of_range_ids_422(client: TestClient) -> None:
    for path in (
        "/sweeps/9999",
        "/sweeps/9999/trials",
        "/sweeps/9999/export",
        "/sweeps/9999/events",
        "/trials/9999",
        "/trials/9999/metrics",
    ):
        r = client.get(path)
        assert r.status_code == 404, path
        assert "9999" in r.json()["detail"]
    for bad in ("0", "-1", str(2**31), str(2**63), str(10**30), "abc", "1.5"):
        assert client.get(f"/sweeps/{bad}").status_code == 422, bad
        assert client.get(f"/trials/{bad}/metrics").status_code == 422, bad


# ---- data sources: only "builtin" or paths under SWEEP_DATA_ROOTS -----------------------------------------


def test_without_data_roots_only_the_builtin_corpus_is_accepted(client: TestClient) -> None:
    assert client.post("/sweeps", json=quickstart(data="builtin")).status_code == 201
    errors = fields(client.post("/sweeps", json=quickstart(data="/srv/tokens")))
    assert list(errors) == ["data"] and "SWEEP_DATA_ROOTS" in errors["data"]


def test_data_paths_must_stay_inside_the_data_roots(make_client: MakeClient, tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "corpus").mkdir(parents=True)
    (root / "corpus" / "train.bin").write_bytes(b"\0" * 8)
    outside = tmp_path / "secret"
    outside.mkdir()
    os.symlink(outside, root / "escape")
    client = make_client(SWEEP_DATA_ROOTS=f"{tmp_path / 'other'},{root}")  # a relative path: the root holding it

    accepted = {
        str(root / "corpus"): root / "corpus",
        "corpus/train.bin": root / "corpus" / "train.bin",  # relative to a root, stored resolved
        "corpus/../corpus": root / "corpus",
    }
    for given, resolved in accepted.items():
        r = client.post("/sweeps", json=quickstart(data=given))
        assert r.status_code == 201, (given, r.text)
        assert r.json()["spec"]["data"] == str(resolved.resolve())

    refused = [
        str(outside),
        "/etc/passwd",
        "../secret",
        "corpus/../../secret",
        str(root / "escape"),  # a symlink inside the root that points out of it
        "escape/x.bin",
        "https://example.com/tokens.bin",
        "s3://bucket/tokens",
        "file:///etc/passwd",
        "",
    ]
    one_root = make_client(SWEEP_DATA_ROOTS=str(root))
    for given in refused:
        errors = fields(one_root.post("/sweeps", json=quickstart(data=given)))
        assert list(errors) == ["data"], given
    assert client.get("/sweeps").json()["total"] == len(accepted)


def test_a_retry_that_races_the_first_request_gets_its_sweep(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = client.post("/sweeps", json=quickstart(), headers={"Idempotency-Key": "race"}).json()
    # The retry's look-up runs before the first request's insert commits: it misses, and its own insert then
    # hits the unique key. It must answer with the first sweep, not fail.
    calls = []
    lookup = repo.sweep_by_idempotency_key

    def late_lookup(s: Any, key: str) -> Any:
        calls.append(key)
        return None if len(calls) == 1 else lookup(s, key)

    monkeypatch.setattr("db.repository.sweep_by_idempotency_key", late_lookup)
    r = client.post("/sweeps", json=quickstart(), headers={"Idempotency-Key": "race"})
    assert r.status_code == 200 and r.json()["id"] == first["id"] and len(calls) == 2
    assert client.get("/sweeps").json()["total"] == 1
