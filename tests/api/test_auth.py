"""Bearer tokens: 401 without or with a wrong token, 403 for a read-only token on a write; /healthz is open."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from api_builders import MakeClient, T, quickstart
from fastapi.testclient import TestClient

WRITE = "w-0123456789abcdef"
READ = "r-fedcba9876543210"


@pytest.fixture
def secured(make_client: MakeClient) -> TestClient:
    return make_client(SWEEP_API_TOKEN=f" {WRITE} , spare-token", SWEEP_API_READ_TOKENS=READ)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def concrete(path: str, sweep_id: int, trial_id: int) -> str:
    return (
        path.replace("{sweep_id}", str(sweep_id))
        .replace("{trial_id}", str(trial_id))
        .replace("{name}", "adamw" if "optimizers" in path else "tiny-130k")
    )


# The external-trial writes' bodies (api/routers/external.py); the stored sweep is not external: each answers 409.
BODIES: dict[str, Any] = {
    "/sweeps/{sweep_id}": {"name": "renamed"},  # PATCH (GET and DELETE ignore it)
    "/sweeps/{sweep_id}/suggestions": {"worker": "w"},
    "/trials/{trial_id}/heartbeat": {"worker": "w"},
    "/trials/{trial_id}/metrics": {"worker": "w", "points": [{"step": 1, "loss": 1.0}]},
    "/trials/{trial_id}/complete": {"worker": "w", "final_loss": 1.0},
}


def test_every_endpoint_but_healthz_needs_a_valid_token(secured: TestClient, store: Any) -> None:
    stored = store({"adamw/tiny-130k/1": [T({"lr": 1e-3}, loss=3.0)]}, status="completed")
    schema = secured.get("/openapi.json", headers=bearer(READ)).json()
    operations = [(m.upper(), p) for p, item in schema["paths"].items() for m in item]
    operations.sort(key=lambda op: op[0] == "DELETE")  # the stored sweep is deleted last
    assert len(operations) >= 15
    for method, path in [*operations, ("GET", "/openapi.json")]:
        url = concrete(path, stored.sweep_id, stored.trials[0])
        if path == "/healthz":
            assert secured.request(method, url).status_code == 200
            continue
        for headers in ({}, bearer("wrong"), bearer(""), {"Authorization": WRITE}, {"Authorization": f"Basic {WRITE}"}):
            r = secured.request(method, url, headers=headers)
            assert r.status_code == 401, (method, url, headers, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
            assert WRITE not in r.text and READ not in r.text
        token = READ if method == "GET" else WRITE
        params = {"optimizer": "adamw", "params": 131072} if path == "/predict" else None  # its required query
        body = quickstart() if path == "/sweeps" else BODIES.get(path)
        r = secured.request(method, url, headers=bearer(token), params=params, json=body)
        # Let in: (the sweep is completed, so cancelling it is a 409 and its event stream ends at once).
        assert r.status_code in (200, 201, 204, 409), (method, url, r.status_code, r.text)
    # The docs page and its packaged assets hold no data: they load without a token, and the page asks for one.
    page = secured.get("/docs")
    assert page.status_code == 200 and "persistAuthorization" in page.text


def test_a_read_only_token_reads_but_cannot_write(secured: TestClient) -> None:
    created = secured.post("/sweeps", json=quickstart(), headers=bearer(WRITE))
    assert created.status_code == 201
    sweep_id = created.json()["id"]
    r = secured.post("/sweeps", json=quickstart(), headers=bearer(READ))
    assert r.status_code == 403 and "read-only" in r.json()["detail"]
    assert secured.post(f"/sweeps/{sweep_id}/cancel", headers=bearer(READ)).status_code == 403
    assert secured.get(f"/sweeps/{sweep_id}", headers=bearer(READ)).json()["status"] == "queued"
    assert secured.get("/sweeps", headers=bearer("spare-token")).json()["total"] == 1  # every listed token works
    with secured.stream("GET", f"/sweeps/{sweep_id}/events", headers=bearer(READ)) as stream:
        assert stream.status_code == 200  # (the sweep is queued: the stream stays open, so stop here)


def test_auth_comes_before_reading_the_body(secured: TestClient) -> None:
    # An unauthenticated caller gets 401 whatever it sends, never a validation error about the body.
    for body in (b"not json", b"[]", b'{"name": 1}'):
        r = secured.post("/sweeps", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 401
    r = secured.post("/sweeps", content=b"not json", headers={**bearer(READ), "Content-Type": "application/json"})
    assert r.status_code == 403


def test_tokens_are_never_logged(secured: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        secured.get("/sweeps", headers=bearer(WRITE))
        secured.get("/sweeps", headers=bearer(READ))
        secured.post("/sweeps", json=quickstart(), headers=bearer(READ))
        secured.get("/sweeps", headers=bearer("guess-" + WRITE))
    assert WRITE not in caplog.text and READ not in caplog.text


def test_without_tokens_the_api_is_open(client: TestClient) -> None:
    assert client.get("/sweeps").status_code == 200
    assert client.post("/sweeps", json=quickstart()).status_code == 201
