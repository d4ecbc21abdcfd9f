"""The uninterrupted reference run every chaos test compares with (one per test session)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import SPEC, cli, outcome, sqlite_url


@pytest.fixture(scope="session")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "chaos.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory, spec_file: Path) -> dict[str, Any]:
    """The sweep's trials and bests, run once without faults."""
    home = tmp_path_factory.mktemp("reference")
    proc = cli(home, "run", str(spec_file))
    assert proc.wait(timeout=900) == 0, (home / "log-0.txt").read_text()
    ref = outcome(sqlite_url(home), 1)
    assert len(ref["trials"]) == 4 and all(t[2] == "completed" for t in ref["trials"]), ref
    return ref


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database (sweep ids start at 1), dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    from db.migrate import upgrade
    from tests.conftest import PG_SERVER

    name = f"sweep_chaos_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {PG_SERVER}: {exc.orig}")
    url = f"{PG_SERVER.rsplit('/', 1)[0]}/{name}"
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()
