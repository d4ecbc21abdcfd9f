"""POST /sweeps refuses impossible specs with a 422 naming the field, takes JSON or YAML by Content-Type and
refuses anything else with 415 (issue 13, items 4 and 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from api_builders import MakeClient, make_settings, quickstart
from fastapi.testclient import TestClient

from api.app import create_app


def fields(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {d["field"]: d["message"] for d in response.json()["errors"]}


def test_multiples_out_of_range_are_422_naming_the_field(client: TestClient) -> None:
    for multiple in (1e308, 0, -1, 1001):
        errors = fields(client.post("/sweeps", json=quickstart(chinchilla=[multiple])))
        assert list(errors) == ["chinchilla"] and "within [0.001, 1000]" in errors["chinchilla"], multiple
    cell = {"optimizer": "adamw", "scale": "tiny-130k", "chinchilla": 1e308}
    errors = fields(client.post("/sweeps", json={"name": "c", "cells": [cell]}))
    assert list(errors) == ["cells.0.chinchilla"]
    for text in (".nan", ".inf"):  # YAML has NaN and infinity; JSON bodies refuse them while parsing
        body = f"name: y\noptimizers: [adamw]\nscales: [tiny-130k]\nchinchilla: [{text}]\n"
        r = client.post("/sweeps", content=body, headers={"Content-Type": "application/yaml"})
        assert list(fields(r)) == ["chinchilla"], text
    assert client.get("/sweeps").json()["total"] == 0


def test_too_many_cells_is_422_before_planning(make_client: MakeClient) -> None:
    client = make_client(SWEEP_MAX_CELLS=2)
    errors = fields(client.post("/sweeps", json=quickstart(chinchilla=[0.5, 1, 2])))
    assert "3 cells is more than SWEEP_MAX_CELLS=2" in errors["spec"]
    # The 10,000 cells: refused by count (the names are not even looked up).
    huge = quickstart(optimizers=[f"o{i}" for i in range(50)], scales=[f"s{i}" for i in range(200)])
    assert "10000 cells" in fields(make_client().post("/sweeps", json=huge))["spec"]
    assert client.post("/sweeps", json=quickstart(chinchilla=[0.5, 1])).status_code == 201


def test_a_cell_that_cannot_run_any_config_is_named(client: TestClient) -> None:
    spec = quickstart(search={"adamw": {"fixed": {"warmup": 100_000}}})
    errors = fields(client.post("/sweeps", json=spec))
    assert "adamw/tiny-130k/1 cannot run any config" in errors["chinchilla"]


def test_a_data_path_must_exist(make_client: MakeClient, tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    client = make_client(SWEEP_DATA_ROOTS=str(root))
    errors = fields(client.post("/sweeps", json=quickstart(data="missing/tokens.bin")))
    assert "does not exist under the data roots" in errors["data"]


def test_resources_the_embedded_ray_lacks_are_refused(db_url: str, tmp_path: Path) -> None:
    import torch

    spec = quickstart(resources={"cpu": 4096})
    with TestClient(create_app(db_url, make_settings(tmp_path), local_ray=True)) as local:
        errors = fields(local.post("/sweeps", json=spec))
        assert "this machine's Ray can never run a trial: {cpu: 4096}" in errors["resources"]
        if not torch.cuda.is_available():
            assert "{gpu: 1}" in fields(local.post("/sweeps", json=quickstart(resources={"gpu": 1})))["resources"]
        local.app.state.db.dispose()  # type: ignore[attr-defined]
    # Dispatchers elsewhere (serve --no-dispatcher, a cluster that may grow): accepted, then shown as waiting.
    with TestClient(create_app(db_url, make_settings(tmp_path))) as remote:
        assert remote.post("/sweeps", json=spec).status_code == 201
        remote.app.state.db.dispose()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "image/png"]
)
def test_bodies_that_are_neither_json_nor_yaml_are_415(client: TestClient, content_type: str) -> None:
    r = client.post("/sweeps", content=b'{"name": "x"}', headers={"Content-Type": content_type})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    assert client.get("/sweeps").json()["total"] == 0


def test_yaml_bodies_are_specs(client: TestClient) -> None:
    body = "name: y\noptimizers: [adamw]\nscales: [tiny-130k]\nchinchilla: [1]\n"
    for content_type in ("application/yaml", "application/x-yaml", "text/yaml; charset=utf-8"):
        r = client.post("/sweeps", content=body, headers={"Content-Type": content_type})
        assert r.status_code == 201, r.text
    json_body = b'{"name": "j", "optimizers": ["adamw"], "scales": ["tiny-130k"]}'
    assert (
        client.post(
            "/sweeps", content=json_body, headers={"Content-Type": "application/json; charset=utf-8"}
        ).status_code
        == 201
    )
    for bad in ("name: [unclosed", "- a\n- b\n", "a: &x [1]\nb: *x\n", ""):
        r = client.post("/sweeps", content=bad, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "spec", bad
