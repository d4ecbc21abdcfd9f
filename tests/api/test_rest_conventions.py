"""REST conventions (issue 15): errors as RFC 9457 problem+json, every status code documented, HEAD and OPTIONS
with a complete Allow, SWEEP_CORS_ORIGINS, and /docs from packaged assets; on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api_builders import MakeClient, Stored, T, quickstart
from fastapi.testclient import TestClient

PROBLEM = "application/problem+json"
SWEEP_METHODS = "DELETE, GET, HEAD, OPTIONS, PATCH"


def assert_problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["type"] == "about:blank" and body["status"] == status and isinstance(body["title"], str)
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def test_errors_are_problem_details(client: TestClient, make_client: MakeClient) -> None:
    body = assert_problem(client.get("/sweeps/424242"), 404)
    assert body["title"] == "Not Found" and body["detail"] == "no sweep 424242"
    body = assert_problem(client.get("/sweeps", params={"limit": 0, "offset": -1}), 422)
    assert {e["field"] for e in body["errors"]} == {"limit", "offset"}
    assert all(isinstance(e["message"], str) and e["message"] for e in body["errors"])
    assert "limit" in body["detail"] and "offset" in body["detail"]
    body = assert_problem(client.get("/sweeps", params={"stauts": "x"}), 422)
    assert [e["field"] for e in body["errors"]] == ["stauts"]
    body = assert_problem(client.post("/sweeps", json={**quickstart(), "budget": -1}), 422)
    assert [e["field"] for e in body["errors"]] == ["budget"]
    # A field name that str.isdigit() calls a digit but int() refuses (found by schemathesis): a 422, not a 500.
    weird = {**quickstart(), "search": {"adamw": {"baseline": {"\u00b9": "\u0000"}}}}
    assert assert_problem(client.post("/sweeps", json=weird), 422)["errors"]
    body = assert_problem(client.post("/sweeps", content=b"x" * 2_000_000), 413)
    assert "SWEEP_MAX_BODY_BYTES" in body["detail"]
    assert_problem(client.put("/sweeps"), 405)
    secured = make_client(SWEEP_API_TOKEN="secret-token")
    r = secured.get("/sweeps")
    assert assert_problem(r, 401)["title"] == "Unauthorized" and r.headers["www-authenticate"] == "Bearer"


def test_every_error_status_is_documented_as_a_problem(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            if "{sweep_id}" in path or "{trial_id}" in path or "{name}" in path:
                assert "404" in responses, (method, path)
            assert "422" in responses, (method, path)
            for code, response in responses.items():
                if code[0] in "45":
                    assert list(response["content"]) == [PROBLEM], (method, path, code)


def test_head_options_and_allow(client: TestClient, store: Callable[..., Stored]) -> None:
    stored = store({"adamw/tiny-130k/1": [T({"lr": 1e-3})]}, status="completed")
    url = f"/sweeps/{stored.sweep_id}"
    get = client.get(url)
    head = client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"] != "0"
    assert head.headers["content-type"] == get.headers["content-type"]
    assert client.head("/sweeps/424242").status_code == 404
    running = store({"adamw/tiny-130k/1": [T({"lr": 1e-3}, status="running")]}, status="running")
    stream = client.head(f"/sweeps/{running.sweep_id}/events")  # a stream that never ends: headers only, at once
    assert stream.status_code == 200 and stream.content == b""
    assert stream.headers["content-type"].startswith("text/event-stream")

    options = client.options(url)
    assert options.status_code == 204 and options.headers["allow"] == SWEEP_METHODS
    assert client.options("/sweeps").headers["allow"] == "GET, HEAD, OPTIONS, POST"
    assert client.options(f"{url}/cancel").headers["allow"] == "OPTIONS, POST"
    assert client.options("/no-such-thing").status_code == 404

    for method, target, allow in (("PUT", url, SWEEP_METHODS), ("DELETE", "/sweeps", "GET, HEAD, OPTIONS, POST")):
        r = client.request(method, target)
        assert_problem(r, 405)
        assert r.headers["allow"] == allow, (method, target)
    assert client.get(f"{url}/cancel").headers["allow"] == "OPTIONS, POST"


def test_cors_is_off_by_default_and_follows_the_setting(client: TestClient, make_client: MakeClient) -> None:
    preflight = {"Origin": "https://lab.example.org", "Access-Control-Request-Method": "PATCH"}
    assert "access-control-allow-origin" not in client.get("/sweeps", headers={"Origin": preflight["Origin"]}).headers
    assert "access-control-allow-origin" not in client.options("/sweeps/1", headers=preflight).headers

    allowed = make_client(SWEEP_CORS_ORIGINS="https://lab.example.org, https://other.example.org")
    r = allowed.options("/sweeps/1", headers=preflight)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://lab.example.org"
    assert "PATCH" in r.headers["access-control-allow-methods"]
    got = allowed.get("/sweeps", headers={"Origin": "https://lab.example.org"})
    assert got.headers["access-control-allow-origin"] == "https://lab.example.org"
    stranger = allowed.get("/sweeps", headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in stranger.headers


def test_docs_are_served_from_packaged_assets_and_send_the_token(make_client: MakeClient) -> None:
    secured = make_client(SWEEP_API_TOKEN="secret-token")
    page = secured.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    assert "persistAuthorization: true" in page.text and "Authorization" in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        r = secured.get(f"/docs/assets/{asset}")
        assert r.status_code == 200 and len(r.content) > 10_000, asset
    assert secured.get("/docs/assets/..%2Fsecret").status_code == 404
    assert secured.get("/openapi.json").status_code == 401  # the schema itself still needs the token
    schema = secured.get("/openapi.json", headers={"Authorization": "Bearer secret-token"}).json()
    schemes = schema["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values()] == ["bearer"]
