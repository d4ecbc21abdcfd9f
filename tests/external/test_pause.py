"""Pausing an external sweep (issue 15): outside workers get no trials while it is paused, the trials they held
go back to pending, and resume offers them again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from objective import SPEC

from api.app import create_app
from sweep_service.settings import Settings


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(db_url, Settings(SWEEP_HOME=tmp_path))
    with TestClient(app) as c:
        yield c


def test_a_paused_external_sweep_leases_nothing_until_resumed(client: TestClient) -> None:
    sid = client.post("/sweeps", json=SPEC).json()["id"]
    ask = {"worker": "a", "count": 2}
    held = client.post(f"/sweeps/{sid}/suggestions", json=ask).json()["trials"]
    assert len(held) == 2
    assert client.post(f"/sweeps/{sid}/pause").json()["status"] == "paused"
    idle = client.post(f"/sweeps/{sid}/suggestions", json=ask).json()
    assert idle == {"trials": [], "done": False}
    late = client.post(f"/trials/{held[0]['id']}/heartbeat", json={"worker": "a"})
    assert late.status_code == 409  # its trial went back to pending
    assert client.post(f"/sweeps/{sid}/resume").json()["status"] == "queued"
    again = client.post(f"/sweeps/{sid}/suggestions", json=ask).json()["trials"]
    assert {t["id"] for t in again} == {t["id"] for t in held}
