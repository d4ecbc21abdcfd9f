"""Malformed input gets a 4xx JSON error naming the field, oversized bodies 413, and nothing a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from api_builders import MakeClient, quickstart
from fastapi.testclient import TestClient


def post_raw(client: TestClient, body: bytes) -> tuple[int, dict[str, Any]]:
    r = client.post("/sweeps", content=body, headers={"Content-Type": "application/json"})
    return r.status_code, r.json()


def test_bodies_that_are_not_a_json_object_are_422(client: TestClient) -> None:
    for body in (
        b"",
        b"   ",
        b"{not json",
        b"[1, 2]",
        b'"a string"',
        b"null",
        b"\xff\xfe\x00garbage",
        b'{"name": "x", "optimizers": ["adamw"], "scales": ["tiny-130k"], "tolerance": NaN}',
        b'{"name": "x", "optimizers": ["adamw"], "scales": ["tiny-130k"], "tolerance": Infinity}',
        b'{"name": "x", "optimizers": ["adamw"], "scales": ["tiny-130k"], "tolerance": 1e400}',
        b"[" * 100_000 + b"]" * 100_000,  # deeper than any parser's stack
        b'{"a": ' * 5000 + b"1" + b"}" * 5000,
    ):
        status, payload = post_raw(client, body)
        assert status == 422, body[:60]
        assert payload["errors"][0]["loc"][0] == "body", body[:60]
    assert client.get("/sweeps").json()["total"] == 0


def test_text_no_database_can_store_is_refused_with_its_field(client: TestClient) -> None:
    # PostgreSQL cannot store a NUL in text; a lone surrogate is not UTF-8 (neither database can bind it).
    cases = {
        "name": quickstart(name="bad\u0000name"),
        "search.adamw.fixed": quickstart(search={"adamw": {"fixed": {"bad\u0000key": 1}}}),
    }
    for field, doc in cases.items():
        status, payload = post_raw(client, json.dumps(doc).encode())
        assert status == 422 and payload["errors"][0]["field"] == field, (field, payload)
    status, payload = post_raw(client, b'{"name": "\\ud800", "optimizers": ["adamw"], "scales": ["tiny-130k"]}')
    assert status == 422 and payload["errors"][0]["field"] == "name"
    assert client.get("/sweeps").json()["total"] == 0


def test_huge_numbers_and_wrong_types_name_their_field(client: TestClient) -> None:
    for doc, field in (
        (quickstart(budget=10**40), "budget"),
        (quickstart(chinchilla=[10**400]), "chinchilla.0"),
        (quickstart(max_concurrent=True), None),  # a bool for an int: pydantic accepts it (1), that is fine
        (quickstart(seeds=[]), "seeds"),
        (quickstart(seeds="0"), "seeds"),
        (quickstart(name="n" * 201), "name"),
        (quickstart(optimizers="adamw"), "optimizers"),
        (quickstart(cells=[{"optimizer": "adamw"}]), "cells.0.scale"),
        (quickstart(strategy="bayes"), "strategy"),
    ):
        status, payload = post_raw(client, json.dumps(doc).encode())
        if field is None:
            assert status == 201
            continue
        assert status == 422, doc
        assert field in [d["field"] for d in payload["errors"]], (field, payload)


def test_a_bad_tolerance_is_one_error_naming_the_field(client: TestClient) -> None:
    # tolerance is a number or "auto": one error for the field, not one per member of pydantic's union
    for bad in (-1, "autox", "1e400", True):
        status, payload = post_raw(client, json.dumps(quickstart(tolerance=bad)).encode())
        assert status == 422 and [d["field"] for d in payload["errors"]] == ["tolerance"], (bad, payload)
        assert "a finite number >= 0 (the paper's 3e-3) or `auto`" in payload["errors"][0]["message"], payload
    assert post_raw(client, json.dumps(quickstart(tolerance="2e-3")).encode())[0] == 201  # YAML 1.1's string form


def test_oversized_bodies_are_413(make_client: MakeClient) -> None:
    client = make_client(SWEEP_MAX_BODY_BYTES=2000)
    assert client.post("/sweeps", json=quickstart(name="fits")).status_code == 201
    big = quickstart(name="n" * 100, search={"adamw": {"grid": {"lr": [1e-3] * 1000}}})
    r = client.post("/sweeps", json=big)  # declared Content-Length over the limit: refused unread
    assert r.status_code == 413 and "SWEEP_MAX_BODY_BYTES" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"name": "x", "pad": "'
        for _ in range(10):
            yield b"a" * 500
        yield b'"}'

    r = client.post("/sweeps", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    r = client.post("/sweeps", content=b"{}", headers={"Content-Length": "abc", "Content-Type": "application/json"})
    assert r.status_code == 400
    assert client.get("/sweeps").json()["total"] == 1


def test_bad_query_values_are_422_naming_the_parameter(client: TestClient) -> None:
    sweep_id = client.post("/sweeps", json=quickstart()).json()["id"]
    for url, params, name in (
        ("/sweeps", {"offset": 2**40}, "offset"),
        (f"/sweeps/{sweep_id}/trials", {"scale": "x" * 201}, "scale"),
        (f"/sweeps/{sweep_id}/trials", {"optimizer": "a\x00"}, "optimizer"),
        (f"/sweeps/{sweep_id}/export", {"format": "pickle"}, "format"),
        (f"/sweeps/{sweep_id}/cancel", {"reason": "r" * 501}, "reason"),
        ("/best", {"chinchilla": "-inf"}, "chinchilla"),
    ):
        method = "POST" if url.endswith("cancel") else "GET"
        r = client.request(method, url, params=params)
        assert r.status_code == 422, (url, params)
        assert r.json()["errors"][0]["loc"] == ["query", name]
    assert client.get(f"/sweeps/{sweep_id}").json()["status"] == "queued"


def test_unknown_query_parameters_are_422_naming_them(client: TestClient) -> None:
    sweep_id = client.post("/sweeps", json=quickstart()).json()["id"]
    for method, url, params in (
        ("GET", "/sweeps", {"stauts": "queued"}),  # a misspelt filter must not return everything
        ("GET", f"/sweeps/{sweep_id}/trials", {"optimiser": "adamw", "status": "completed"}),
        ("GET", "/best", {"opt": "adamw"}),
        ("GET", "/optimizers", {"verbose": "1"}),
        ("POST", f"/sweeps/{sweep_id}/cancel", {"force": "true"}),
    ):
        r = client.request(method, url, params=params)
        assert r.status_code == 422, (url, params)
        (error,) = r.json()["errors"]
        assert error["loc"] == ["query", next(iter(params))] and error["type"] == "extra_forbidden"
    valid = client.get("/sweeps", params={"status": "queued", "limit": 5}).json()
    assert valid["total"] == 1
    assert client.get("/healthz", params={"probe": "lb"}).status_code == 200  # health probes stay lenient
    assert client.get(f"/sweeps/{sweep_id}").json()["status"] == "queued"
