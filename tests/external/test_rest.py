"""The REST edge of external sweeps (api/routers/external.py): auth, idempotency, leases and conflicts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from objective import SPEC, loss

from api.app import create_app
from sweep_service.settings import Settings

WRITE = {"Authorization": "Bearer w-token"}
READ = {"Authorization": "Bearer r-token"}


def settings(home: Path, **env: Any) -> Settings:
    values: dict[str, Any] = {
        "SWEEP_HOME": str(home),
        "SWEEP_API_TOKEN": "w-token",
        "SWEEP_API_READ_TOKENS": "r-token",
        "SWEEP_DATA_ROOTS": "",
        **env,
    }
    return Settings(**values)


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(db_url, settings(tmp_path, SWEEP_TRIAL_LEASE_SECONDS=0.5))
    with TestClient(app) as c:
        yield c


def _sweep(client: TestClient, spec: dict[str, Any]) -> int:
    r = client.post("/sweeps", json=spec, headers=WRITE)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def test_suggest_heartbeat_metrics_complete(client: TestClient) -> None:
    sid = _sweep(client, SPEC)
    ask = {"worker": "a", "count": 2}
    assert client.post(f"/sweeps/{sid}/suggestions", json=ask, headers=READ).status_code == 403
    assert client.post(f"/sweeps/{sid}/suggestions", json=ask).status_code == 401
    assert client.post(f"/sweeps/{sid}/suggestions", json={"worker": "a", "count": 0}, headers=WRITE).status_code == 422
    keyed = {**WRITE, "Idempotency-Key": "req-1"}
    first = client.post(f"/sweeps/{sid}/suggestions", json=ask, headers=keyed)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["done"] is False and len(body["trials"]) == 2
    assert set(body["trials"][0]) >= {"id", "cell", "config", "seed", "lease_expires_at"}
    assert client.post(f"/sweeps/{sid}/suggestions", json=ask, headers=keyed).json() == body
    t = body["trials"][0]
    tid = t["id"]
    assert client.post(f"/trials/{tid}/heartbeat", json={"worker": "a"}, headers=WRITE).status_code == 200
    assert client.post(f"/trials/{tid}/heartbeat", json={"worker": "z"}, headers=WRITE).status_code == 409
    points = {"worker": "a", "points": [{"step": 1, "loss": 4.0}, {"step": 2, "loss": 3.5}]}
    r = client.post(f"/trials/{tid}/metrics", json=points, headers=WRITE)
    assert r.status_code == 200 and r.json()["stop"] is False
    curve = client.get(f"/trials/{tid}/metrics", headers=READ).json()
    assert [p["step"] for p in curve["points"]] == [1, 2]
    value = loss(t["config"], t["seed"])
    done = {"worker": "a", "final_loss": value}
    assert client.post(f"/trials/{tid}/complete", json={"worker": "a"}, headers=WRITE).status_code == 422
    r = client.post(f"/trials/{tid}/complete", json=done, headers=WRITE)
    assert r.status_code == 200 and r.json()["status"] == "completed"
    assert client.post(f"/trials/{tid}/complete", json=done, headers=WRITE).json() == r.json()  # idempotent
    assert client.post(f"/trials/{tid}/complete", json={**done, "final_loss": 9.0}, headers=WRITE).status_code == 409
    assert client.get(f"/trials/{tid}", headers=READ).json()["status"] == "completed"


def test_expired_lease_is_offered_again_and_the_late_worker_gets_409(client: TestClient) -> None:
    import time

    sid = _sweep(client, SPEC)
    (t,) = client.post(f"/sweeps/{sid}/suggestions", json={"worker": "a"}, headers=WRITE).json()["trials"]
    time.sleep(1.0)  # the test's lease is 0.5 s
    again = client.post(f"/sweeps/{sid}/suggestions", json={"worker": "b", "count": 10}, headers=WRITE).json()
    assert t["id"] in [x["id"] for x in again["trials"]]
    late = client.post(f"/trials/{t['id']}/complete", json={"worker": "a", "final_loss": 2.0}, headers=WRITE)
    assert late.status_code == 409 and "another worker" in late.json()["detail"]
    fail = {"worker": "b", "status": "failed", "reason": "out of memory"}
    r = client.post(f"/trials/{t['id']}/complete", json=fail, headers=WRITE)
    assert r.json() == {"trial_id": t["id"], "status": "failed", "final_loss": None, "reason": "out of memory"}


def test_a_ray_sweep_and_unknown_ids(client: TestClient) -> None:
    sid = _sweep(client, {**SPEC, "executor": "ray"})
    r = client.post(f"/sweeps/{sid}/suggestions", json={"worker": "a"}, headers=WRITE)
    assert r.status_code == 409 and "dispatcher" in r.json()["detail"]
    assert client.post("/sweeps/999/suggestions", json={"worker": "a"}, headers=WRITE).status_code == 404
    assert client.post("/trials/999/heartbeat", json={"worker": "a"}, headers=WRITE).status_code == 404
    bad = client.post("/sweeps", json={**SPEC, "executor": "slurm"}, headers=WRITE)
    assert bad.status_code == 422 and "executor" in bad.text
