"""Shared fixtures. Tests mirror the package tree (tests/workers, tests/sweep_service, ...)."""

from __future__ import annotations

import os

import pytest
import torch

from workers.model import SCALES, Transformer, build_model

# ---- threads --------------------------------------------------------------------------------------------
# `make test` runs one pytest process per core (pytest-xdist). torch's default of one intra-op thread per core
# in each of them oversubscribes the machine, and the OpenMP threads then spin against each other: on the
# 2-core CI machine, 64 steps of tiny-130k AdamW took 47 s with 2 threads beside a second busy process and
# 10 s with 1 (2026-12-04). Each worker gets its share of the cores; its subprocesses (the CLI under test)
# inherit it through OMP_NUM_THREADS. A single-process run (-n 0) keeps torch's default.
_XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _XDIST_WORKERS > 1:
    _threads = max(1, (os.cpu_count() or 1) // _XDIST_WORKERS)
    torch.set_num_threads(_threads)
    os.environ["OMP_NUM_THREADS"] = str(_threads)


@pytest.fixture
def tiny_model() -> Transformer:
    torch.manual_seed(0)
    return build_model(SCALES["tiny-130k"])


# ---- databases ------------------------------------------------------------------------------------------
# SQLite (a file per test) always; PostgreSQL at DATABASE_URL_TEST's server (default the local one, trust
# auth) in a throwaway database per test session, skipped when no server answers.
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

PG_SERVER = os.environ.get("DATABASE_URL_TEST", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    name = f"sweep_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {PG_SERVER}: {exc.orig}")
    base = PG_SERVER.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: SQLite, then PostgreSQL."""
    from db.migrate import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        upgrade(url)
        yield url
        return
    url = request.getfixturevalue("postgres_url")
    upgrade(url)
    yield url
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:  # empty every table for the next test, ours and Optuna's
        tables = [r[0] for r in conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname='public'"))]
        keep = {"sweep_alembic_version", "alembic_version", "version_info"}
        names = ", ".join(f'"{t}"' for t in tables if t not in keep)
        if names:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


# ---- parallel runs (pytest-xdist, `make test`) ------------------------------------------------------------
# Tests that start a local Ray or a Chromium are each kept on one worker (`--dist loadgroup`): two Ray
# instances or two browsers at once on a 2-core machine only slow each other down, and the browser's
# session-scoped server is then started once, not once per worker.
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker, group in (("ray", "ray"), ("browser", "browser")):
            if item.get_closest_marker(marker) is not None and item.get_closest_marker("xdist_group") is None:
                item.add_marker(pytest.mark.xdist_group(group))
                break
