"""Fixtures of the API tests: an app and TestClient per database (SQLite, then PostgreSQL) and a database
handle; the data builders are in api_builders.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from api_builders import MakeClient, Stored, T, make_settings, store_sweep
from fastapi.testclient import TestClient

from api.app import create_app
from db.session import Database


@pytest.fixture
def make_client(db_url: str, tmp_path: Path) -> Iterator[MakeClient]:
    """Build a client for the `db_url` database; keyword arguments are settings by their env names."""
    clients: list[TestClient] = []

    def make(**env: Any) -> TestClient:
        app = create_app(db_url, make_settings(tmp_path, **env))
        app.state.events_poll_seconds = 0.02  # the stream's poll period (1 s in production)
        client = TestClient(app)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
        client.app.state.db.dispose()  # type: ignore[attr-defined]


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def sqlite_client(tmp_path: Path) -> Iterator[TestClient]:
    """A client on a fresh SQLite file, for endpoints that do not depend on the database kind."""
    app = create_app(f"sqlite:///{tmp_path / 'api.db'}", make_settings(tmp_path))
    with TestClient(app) as c:
        yield c


@pytest.fixture
def store(db: Database) -> Callable[..., Stored]:
    def write(cells: dict[str, list[T]], **kwargs: Any) -> Stored:
        return store_sweep(db, cells, **kwargs)

    return write
