"""Fixtures of the use-case tests: a migrated database (SQLite, then PostgreSQL: tests/conftest.py's db_url) and
a writer of sweeps as the engine stores them (tests/api/api_builders.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from db.session import Database
from tests.api.api_builders import Stored, T, store_sweep


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def store(db: Database) -> Callable[..., Stored]:
    def write(cells: dict[str, list[T]], **kwargs: Any) -> Stored:
        return store_sweep(db, cells, **kwargs)

    return write
