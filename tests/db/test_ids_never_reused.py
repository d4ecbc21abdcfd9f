"""Migration 0005: an id is never handed out twice, so a client holding /sweeps/7 or /trials/812 never reads
somebody else's sweep after a delete (SQLite gave the next row max(id) + 1 and reused a deleted newest id)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

from db import repository as repo
from db.migrate import current, upgrade
from db.session import Database


def _sweep_with_trials(db: Database, name: str, n_trials: int = 3) -> tuple[int, int, list[int]]:
    """A sweep with one cell and `n_trials` trials: (sweep id, cell id, trial ids)."""
    with db.session() as s:
        sweep = repo.create_sweep(s, name, {"name": name})
        cell = repo.add_cell(
            s, sweep.id, key="adamw/tiny-130k/1", optimizer="adamw", scale="tiny-130k", chinchilla=1.0,
            strategy="coordinate_descent", space={"grid": {"lr": [0.1]}, "baseline": {"lr": 0.1}, "fixed": {}},
            settings={}, status="pending",
        )  # fmt: skip
        trials = [repo.add_trial(s, cell, {"lr": 0.1 * (i + 1)}, {"lr": 0.1 * (i + 1)}, 0, 1) for i in range(n_trials)]
        return sweep.id, cell.id, [t.id for t in trials if t is not None]


def _delete(db: Database, sweep_id: int) -> None:
    with db.session() as s:
        assert repo.delete_sweep(s, sweep_id, ("queued",)) is not None


def test_deleting_the_newest_sweep_frees_none_of_its_ids(db_url: str) -> None:
    db = Database(db_url)
    _sweep_with_trials(db, "first")
    sweep_id, cell_id, trial_ids = _sweep_with_trials(db, "newest")
    _delete(db, sweep_id)
    again, again_cell, again_trials = _sweep_with_trials(db, "next")
    assert again > sweep_id and again_cell > cell_id and min(again_trials) > max(trial_ids)


def _schema(url: str) -> dict[str, str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type IN ('table', 'index')")).fetchall()
    engine.dispose()
    return {str(name): str(sql) for name, sql in rows}


def test_sqlite_databases_of_0004_keep_every_row_index_and_key(tmp_path: Path) -> None:
    # A database made before the migration, with two sweeps; the newest deleted after the upgrade.
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0004")
    db = Database(url)
    kept = [_sweep_with_trials(db, name, n) for name, n in (("a", 2), ("b", 4))]
    before = _schema(url)
    assert "AUTOINCREMENT" not in before["sweeps"]
    db.dispose()

    upgrade(url)
    assert current(url) == "0005"
    after = _schema(url)
    assert set(after) == set(before) | {"sqlite_sequence"}  # every index kept, no temporary table left
    for name, sql in before.items():
        if name.startswith("ix_"):
            assert after[name] == sql, name  # the same index definitions
    for table in ("sweeps", "cells", "sweep_trials"):
        assert "AUTOINCREMENT" in after[table], table
    for table in ("cells", "sweep_trials"):
        assert after[table].count("ON DELETE CASCADE") == before[table].count("ON DELETE CASCADE") >= 1, table
    db = Database(url)
    with db.session() as s:  # the copy kept every row (with foreign keys on, dropping `sweeps` would cascade)
        assert [r[0] for r in s.execute(text("SELECT id FROM sweeps ORDER BY id"))] == [k[0] for k in kept]
        counts = {t: s.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in ("sweeps", "cells", "sweep_trials")}
        assert counts == {"sweeps": 2, "cells": 2, "sweep_trials": 6}
        assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
    _delete(db, kept[1][0])
    again, _, trials = _sweep_with_trials(db, "c")
    assert again == kept[1][0] + 1 and min(trials) > max(kept[1][2])
    with db.session() as s:  # the cascade still works after the copy: the deleted sweep's cell and trials went too
        assert s.execute(text("SELECT count(*) FROM sweep_trials")).scalar() == 2 + 3
    db.dispose()


def test_the_downgrade_keeps_every_row(tmp_path: Path) -> None:
    from alembic import command

    from db.migrate import alembic_config

    url = f"sqlite:///{tmp_path / 'down.db'}"
    upgrade(url)
    db = Database(url)
    _sweep_with_trials(db, "a", 2)
    db.dispose()
    command.downgrade(alembic_config(url), "0004")
    assert current(url) == "0004" and "AUTOINCREMENT" not in _schema(url)["sweeps"]
    db = Database(url)
    with db.session() as s:
        assert s.execute(text("SELECT count(*) FROM sweep_trials")).scalar() == 2
    db.dispose()


def _old_database(path: Path, trials: int = 50) -> str:
    """A 0004 database with one sweep, one cell and `trials` trials."""
    url = f"sqlite:///{path}"
    upgrade(url, "0004")
    db = Database(url)
    _sweep_with_trials(db, "old", trials)
    db.dispose()
    return url


def _state(url: str) -> tuple[str | None, list[str], int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        tables = sorted(str(r[0]) for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'")))
        rows = int(conn.execute(text("SELECT count(*) FROM sweep_trials")).scalar() or 0)
    engine.dispose()
    return current(url), tables, rows


# Run in a child process: the copy fails (or, with "sleep", waits to be killed) at its last rename.
_FAILING_UPGRADE = """
import sqlite3, sys, time
from sqlalchemy.engine import default
from db.migrate import upgrade
execute = default.DefaultDialect.do_execute
def do_execute(self, cursor, statement, parameters, context=None):
    if statement.startswith("ALTER TABLE _alembic_tmp_sweep_trials RENAME"):
        if sys.argv[2] == "sleep":
            print("copying", flush=True)
            time.sleep(600)
        raise sqlite3.OperationalError("disk I/O error (injected)")
    return execute(self, cursor, statement, parameters, context)
default.DefaultDialect.do_execute = do_execute
upgrade(sys.argv[1])
"""


def test_a_copy_that_fails_or_is_killed_half_way_changes_nothing(tmp_path: Path) -> None:
    # The copy is one transaction: whatever stops it (an error, kill -9), the database stays at 0004 as it was,
    # with no temporary table left, and the next start migrates it.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    for how in ("fail", "sleep"):
        url = _old_database(tmp_path / f"{how}.db")
        before = _state(url)
        child = subprocess.Popen(
            [sys.executable, "-c", _FAILING_UPGRADE, url, how], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        if how == "sleep":
            assert child.stdout is not None and child.stdout.readline().strip() == "copying"
            child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=120)
        assert child.returncode != 0 and (how == "sleep" or "disk I/O error (injected)" in err), err[-500:]
        assert _state(url) == before and before[0] == "0004" and before[2] == 50, how
        upgrade(url)
        assert _state(url) == ("0005", sorted([*before[1], "sqlite_sequence"]), 50), how


def test_rows_orphaned_before_the_migration_do_not_block_it(tmp_path: Path) -> None:
    # e.g. a sweep deleted from the sqlite3 shell, whose foreign keys are off by default: its cell stays behind
    url = _old_database(tmp_path / "orphan.db")
    raw = sqlite3.connect(tmp_path / "orphan.db")
    raw.execute("DELETE FROM sweeps")
    raw.commit()
    raw.close()
    upgrade(url)
    assert _state(url)[0] == "0005"


def test_processes_starting_at_once_migrate_once(tmp_path: Path) -> None:
    # Every command and the server upgrade on start: three at once all succeed (a file lock serialises them).
    url = _old_database(tmp_path / "race.db", trials=2000)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    code = "import sys; from db.migrate import upgrade; upgrade(sys.argv[1])"
    children = [
        subprocess.Popen([sys.executable, "-c", code, url], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err[-1000:]
    assert _state(url)[0] == "0005" and _state(url)[2] == 2000
