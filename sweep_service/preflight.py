"""Checks `sweep-service run` makes before it writes a sweep, so that a run that cannot go through writes nothing.

Issue 13: with a read-only database, or a SWEEP_HOME that cannot be written (and a writable DATABASE_URL), `run`
ended in a traceback, the latter after writing the sweep and its cells. Each check raises PreflightError with
one line saying what cannot be written and why.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError


class PreflightError(ValueError):
    """Something `run` must write cannot be written."""


def check_directory(path: Path, what: str) -> None:
    """`path` exists (made if need be) and a file can be created in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise PreflightError(f"cannot write {what} {str(path)!r}: {exc.strerror or exc}") from None


def check_database_writable(db: Any) -> None:
    """A write the database must accept, rolled back: a read-only SQLite file or a read-only PostgreSQL
    transaction refuses it. (An UPDATE that matches no row is not enough: SQLite takes no write lock for it.)"""
    from db.session import scrub_password

    try:
        with db.engine.connect() as connection:
            transaction = connection.begin()
            try:
                connection.execute(text("UPDATE sweep_alembic_version SET version_num = version_num"))
            finally:
                transaction.rollback()
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        raise PreflightError(f"cannot write the database: {scrub_password(reason, db.url)}") from None
