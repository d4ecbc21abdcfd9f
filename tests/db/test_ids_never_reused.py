"""Migration 0005: an id is never handed out twice, so a client holding /sweeps/7 or /trials/812 never reads
somebody else's sweep after a delete (SQLite gave the next row max(id) + 1 and reused a deleted newest id)."""

from __future__ import annotations

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
