"""DELETE /sweeps/{id}, PATCH /sweeps/{id}, POST /sweeps/{id}/pause and /resume (issue 15), on SQLite and
PostgreSQL, through the REST API and checked in the database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from api_builders import Stored, T, quickstart
from fastapi.testclient import TestClient

from db import repository as repo
from db.session import Database
from sweep_service.engine import optuna_storage, study_name
from sweep_service.lease import claim

PROBLEM = "application/problem+json"


def _studies(db: Database) -> set[str]:
    storage = optuna_storage(db.url)
    try:
        return {s.study_name for s in storage.get_all_studies()}
    finally:
        storage.engine.dispose()


def _make_studies(db: Database, sweep_id: int, keys: list[str]) -> None:
    storage = optuna_storage(db.url)
    for key in keys:
        optuna.create_study(study_name=study_name(sweep_id, key), storage=storage)
    storage.engine.dispose()


def test_delete_removes_the_sweep_its_rows_and_its_optuna_studies(
    client: TestClient, db: Database, store: Callable[..., Stored]
) -> None:
    cells = {"adamw/tiny-130k/1": [T({"lr": 1e-3}, curve=[(1, 3.0, 3.1)]), T({"lr": 3e-3}, loss=2.5)]}
    doomed = store(cells, status="completed")
    kept = store(cells, status="completed")
    _make_studies(db, doomed.sweep_id, list(cells))
    _make_studies(db, kept.sweep_id, list(cells))

    r = client.delete(f"/sweeps/{doomed.sweep_id}")
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert client.get(f"/sweeps/{doomed.sweep_id}").status_code == 404
    with db.session() as s:
        assert repo.get_sweep(s, doomed.sweep_id) is None
        assert repo.cells_of(s, doomed.sweep_id) == [] and repo.trials_of_sweep(s, doomed.sweep_id) == []
        assert all(repo.curve(s, t) == [] for t in doomed.trials)
        assert len(repo.trials_of_sweep(s, kept.sweep_id)) == 2  # the other sweep is untouched
    studies = _studies(db)
    assert study_name(doomed.sweep_id, "adamw/tiny-130k/1") not in studies
    assert study_name(kept.sweep_id, "adamw/tiny-130k/1") in studies

    again = client.delete(f"/sweeps/{doomed.sweep_id}")
    assert again.status_code == 404 and again.headers["content-type"] == PROBLEM


def test_a_running_sweep_is_deleted_only_after_cancel(client: TestClient, store: Callable[..., Stored]) -> None:
    running = store({"adamw/tiny-130k/1": [T({"lr": 1e-3}, status="running")]}, status="running")
    r = client.delete(f"/sweeps/{running.sweep_id}")
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == 409 and body["title"] == "Conflict" and "cancel" in body["detail"]
    assert client.post(f"/sweeps/{running.sweep_id}/cancel").status_code == 200
    assert client.delete(f"/sweeps/{running.sweep_id}").status_code == 204


def test_pause_requeues_trials_in_flight_fences_the_run_and_resume_makes_it_claimable(
    client: TestClient, db: Database, store: Callable[..., Stored]
) -> None:
    stored = store(
        {"adamw/tiny-130k/1": [T({"lr": 1e-3}), T({"lr": 3e-3}, status="running", curve=[(1, 3.0, 3.0)])]},
        status="queued",
    )
    lease = claim(db, stored.sweep_id, "dispatcher-1", 60)
    assert lease is not None

    r = client.post(f"/sweeps/{stored.sweep_id}/pause")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "paused" and r.json()["claimed_by"] is None
    with db.session() as s:
        statuses = {t.id: t.status for t in repo.trials_of_sweep(s, stored.sweep_id)}
        assert statuses[stored.trials[0]] == "completed"  # finished trials are kept
        assert statuses[stored.trials[1]] == "pending"  # the one in flight runs again on resume
        assert repo.claimable_sweep_ids(s) == []  # no dispatcher claims a paused sweep
        assert repo.claim_sweep(s, stored.sweep_id, "dispatcher-2", 60) is None
        assert not repo.fence(s, stored.sweep_id, lease.epoch)  # the old run writes nothing more
        assert not repo.heartbeat(s, stored.sweep_id, "dispatcher-1", 60, lease.epoch)
    assert client.post(f"/sweeps/{stored.sweep_id}/pause").json()["status"] == "paused"  # idempotent

    r = client.post(f"/sweeps/{stored.sweep_id}/resume")
    assert r.status_code == 200 and r.json()["status"] == "queued"
    with db.session() as s:
        assert repo.claimable_sweep_ids(s) == [stored.sweep_id]
    assert client.post(f"/sweeps/{stored.sweep_id}/resume").json()["status"] == "queued"  # idempotent


def test_pause_and_resume_of_finished_or_missing_sweeps(client: TestClient, store: Callable[..., Stored]) -> None:
    done = store({"adamw/tiny-130k/1": [T({"lr": 1e-3})]}, status="completed")
    for action in ("pause", "resume"):
        r = client.post(f"/sweeps/{done.sweep_id}/{action}")
        assert r.status_code == 409 and "completed" in r.json()["detail"], action
        missing = client.post(f"/sweeps/99999/{action}")
        assert missing.status_code == 404 and missing.json()["detail"] == "no sweep 99999"
    # A paused sweep can be cancelled, and then not resumed.
    paused = store({"adamw/tiny-130k/1": [T({"lr": 1e-3}, status="pending")]}, status="queued")
    assert client.post(f"/sweeps/{paused.sweep_id}/pause").status_code == 200
    assert client.post(f"/sweeps/{paused.sweep_id}/cancel").json()["status"] == "cancelled"
    assert client.post(f"/sweeps/{paused.sweep_id}/resume").status_code == 409


def test_patch_renames_and_changes_budget_and_concurrency(client: TestClient, store: Callable[..., Stored]) -> None:
    stored = store({"adamw/tiny-130k/1": [T({"lr": 1e-3}, status="pending")]}, status="queued")
    r = client.patch(f"/sweeps/{stored.sweep_id}", json={"name": "renamed", "budget": 7, "max_concurrent": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "renamed" and body["spec"]["budget"] == 7 and body["spec"]["max_concurrent"] == 3
    assert body["spec"]["name"] == "renamed"
    listed = client.get("/sweeps").json()["items"]
    assert [s["name"] for s in listed if s["id"] == stored.sweep_id] == ["renamed"]
    # Only the fields sent change.
    assert client.patch(f"/sweeps/{stored.sweep_id}", json={"budget": 9}).json()["spec"]["max_concurrent"] == 3

    finished = store({"adamw/tiny-130k/1": [T({"lr": 1e-3})]}, status="completed")
    assert client.patch(f"/sweeps/{finished.sweep_id}", json={"name": "kept"}).json()["name"] == "kept"
    assert client.patch(f"/sweeps/{finished.sweep_id}", json={"budget": 3}).status_code == 409
    assert client.patch("/sweeps/99999", json={"name": "x"}).status_code == 404


def test_patch_refuses_bad_fields_naming_each(client: TestClient, store: Callable[..., Stored]) -> None:
    stored = store({"adamw/tiny-130k/1": [T({"lr": 1e-3}, status="pending")]}, status="queued")
    bad: list[tuple[dict[str, Any], str]] = [
        ({"budget": 0}, "budget"),
        ({"budget": 100_001}, "budget"),
        ({"max_concurrent": -1}, "max_concurrent"),
        ({"max_concurrent": "many"}, "max_concurrent"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"colour": "red"}, "colour"),
    ]
    for body, field in bad:
        r = client.patch(f"/sweeps/{stored.sweep_id}", json=body)
        assert r.status_code == 422, (body, r.text)
        problem = r.json()
        assert r.headers["content-type"] == PROBLEM
        assert problem["status"] == 422 and isinstance(problem["detail"], str)
        assert [e["field"] for e in problem["errors"]] == [field], (body, problem)
        assert all(e["message"] for e in problem["errors"])
    assert client.get(f"/sweeps/{stored.sweep_id}").json()["name"] == "stored"


def test_quickstart_spec_submitted_then_deleted(client: TestClient) -> None:
    created = client.post("/sweeps", json=quickstart())
    assert created.status_code == 201
    assert client.delete(f"/sweeps/{created.json()['id']}").status_code == 204  # queued, no cells: no studies
    assert client.get("/sweeps").json()["total"] == 0
