"""GET /healthz and GET /metrics (Prometheus text format)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from api_builders import T, make_settings, quickstart
from fastapi.testclient import TestClient

from api.app import create_app
from db.session import Database

# One sample line of the Prometheus text format: name, optional {labels}, value.
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of a Prometheus text exposition; fails on any line that is not a comment or a sample."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = SAMPLE.match(line)
        assert m, f"not Prometheus text format: {line!r}"
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def test_healthz_reports_the_database(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "database": "ok"}


def test_metrics_count_trials_queue_depth_and_request_latency(client: TestClient, store: Any) -> None:
    store(
        {
            "adamw/tiny-130k/1": [
                T({"lr": 1e-3}, loss=3.0),
                T({"lr": 2e-3}, status="diverged"),
                T({"lr": 4e-3}, status="pending"),
                T({"lr": 8e-3}, status="pending"),
            ]
        }
    )
    for _ in range(2):
        client.post("/sweeps", json=quickstart())
    store({"adamw/tiny-130k/1": [T({"lr": 1e-3}, loss=3.0)]}, status="queued", imported=True)  # never dispatched
    for sweep_id in (1, 2, 3, 99):  # three sweeps exist before the imported one
        client.get(f"/sweeps/{sweep_id}")
    client.get("/no/such/path/12345")

    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = parse(r.text)
    trials = {dict(labels)["status"]: v for (name, labels), v in m.items() if name == "sweep_trials"}
    assert trials == {"pending": 2, "running": 0, "completed": 2, "diverged": 1, "failed": 0, "cancelled": 0}
    assert m[("sweep_queue_depth", frozenset())] == 2
    assert m[("sweep_sweeps", frozenset({("status", "queued")}))] == 3
    assert m[("sweep_sweeps", frozenset({("status", "running")}))] == 1

    route = frozenset({("method", "GET"), ("route", "/sweeps/{sweep_id}")})
    assert m[("sweep_api_request_duration_seconds_count", route)] == 4
    assert m[("sweep_api_request_duration_seconds_sum", route)] > 0
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in m.items()
        if name == "sweep_api_request_duration_seconds_bucket" and labels >= route
    )
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and buckets[-1] == (float("inf"), 4)  # cumulative, +Inf is the count
    ok = frozenset({*route, ("status", "200")})
    missing = frozenset({*route, ("status", "404")})
    assert m[("sweep_api_requests_total", ok)] == 3 and m[("sweep_api_requests_total", missing)] == 1
    # Paths are never labels: an unknown path is counted under one shared label.
    assert "12345" not in r.text
    assert m[("sweep_api_requests_total", frozenset({("method", "GET"), ("route", "<unmatched>"), ("status", "404")}))]


def test_healthz_is_503_when_the_database_does_not_answer(sqlite_client: TestClient) -> None:
    app: Any = sqlite_client.app
    working = app.state.db
    app.state.db = Database("postgresql+psycopg2://nobody@127.0.0.1:1/none")  # nothing listens on port 1
    try:
        r = sqlite_client.get("/healthz")
    finally:
        app.state.db.dispose()
        app.state.db = working
    assert r.status_code == 503 and r.json()["database"] == "unavailable"
    assert "nobody" not in r.text  # the URL (it may hold a password) is not echoed


def test_an_unexpected_error_is_a_plain_500_without_internals(
    sqlite_client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("db.queries.count_sweeps", broken)
    client = TestClient(sqlite_client.app, raise_server_exceptions=False)
    r = client.get("/sweeps")
    assert r.status_code == 500 and r.json()["detail"] == "internal server error"
    assert r.headers["content-type"] == "application/problem+json"
    assert "secret internals" in caplog.text  # logged for the operator, not sent to the client


def test_the_factory_takes_the_database_from_the_settings(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'from-settings.db'}"
    app = create_app(settings=make_settings(tmp_path, DATABASE_URL=url))
    with TestClient(app) as client:
        assert client.post("/sweeps", json=quickstart()).status_code == 201
    assert (tmp_path / "from-settings.db").exists() and app.state.db.url == url
