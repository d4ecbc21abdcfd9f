"""The dashboard's page and assets as served (no browser needed): public, self-contained, and only the
listed files. The browser tests (test_dashboard.py) check what the page does with them."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.routers.dashboard import ASSETS, MEDIA_TYPES
from sweep_service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
TOKEN = "dashboard-test-token"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # an identifier in charts.js, never fetched


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    env: dict[str, Any] = {
        "SWEEP_HOME": str(tmp_path),
        "SWEEP_API_TOKEN": TOKEN,
        "SWEEP_API_READ_TOKENS": "",
        "SWEEP_DATA_ROOTS": "",
    }
    settings = Settings(**env)  # by their environment names, so the machine's environment is ignored
    app = create_app(f"sqlite:///{tmp_path / 'dash.db'}", settings)
    with TestClient(app) as c:
        yield c
    app.state.db.dispose()


def _page_assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/ui/[^"]+)"', html)


def test_page_and_assets_are_public_while_data_needs_the_token(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = _page_assets(page.text)
    assert sorted(a.removeprefix("/ui/") for a in assets) == sorted(MEDIA_TYPES)
    for path in assets:
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"] == MEDIA_TYPES[path.removeprefix("/ui/")]
        assert r.headers["x-content-type-options"] == "nosniff"
    # The page holds no data: the data behind it still needs the token.
    assert client.get("/sweeps").status_code == 401
    assert client.get("/sweeps", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_only_listed_assets_are_served(client: TestClient) -> None:
    for path in ("/ui/index.html", "/ui/nope.js", "/ui/..%2Fapp.py", "/ui/%2e%2e%2fschemas.py", "/ui/"):
        assert client.get(path).status_code == 404, path
    assert client.get("/ui/../api/app.py").status_code == 404


def test_the_dashboard_is_not_in_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()["paths"]
    assert "/" not in paths and not any(p.startswith("/ui") for p in paths)


def test_assets_fetch_nothing_from_elsewhere() -> None:
    # No absolute URL, CDN, CSS import or url() other than inline data and in-document references (#clip).
    for path in ASSETS.iterdir():
        text = path.read_text().replace(SVG_NAMESPACE, "")
        assert not re.search(r"https?://|//cdn|@import|url\(\s*['\"]?(?!data:|#)", text), path.name


def test_every_asset_ships_as_package_data() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["api"]
    files = sorted(p.relative_to(ASSETS.parent).as_posix() for p in ASSETS.iterdir() if p.is_file())
    generated = {"palette.js"}  # api/routers/dashboard.py palette_js: from sweep_service/palette.py
    expected = ["dashboard/index.html", *(f"dashboard/{name}" for name in MEDIA_TYPES if name not in generated)]
    assert files == sorted(expected)
    for f in files:
        assert any(fnmatch.fnmatch(f, p) for p in patterns), f
