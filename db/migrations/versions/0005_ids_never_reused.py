"""ids are never handed out twice: SQLite's sweeps, cells and trials tables get AUTOINCREMENT

Without it SQLite gives a new row max(id) + 1, so deleting the newest sweep (DELETE /sweeps/{id}) let the next
POST /sweeps take its id, and its cells' and trials' ids went to the next sweep's: a client still holding
`/sweeps/7` or `/trials/812` got somebody else's. With AUTOINCREMENT SQLite keeps the largest id ever used
(sqlite_sequence). PostgreSQL's sequences never reuse an id: nothing to do there.

SQLite cannot add AUTOINCREMENT to a table, so each table is copied into a new one (Alembic's batch mode,
recreate). The whole copy is one explicit transaction (BEGIN IMMEDIATE ... COMMIT, on a connection in autocommit
mode: Python's sqlite3 would otherwise commit each CREATE TABLE at once), so a copy that fails or is killed half
way leaves the database as it was, at 0004, and the next start tries again. Foreign keys are switched off for
the copy (a PRAGMA that only acts outside a transaction): with them on, dropping the old `sweeps` would cascade
(ON DELETE CASCADE) to every cell and trial. Before the commit the foreign keys of the tables that reference the
copied ones are checked: a violation the copy made rolls it back (ones that were there before are left alone).
Ids deleted before this migration were already forgotten by SQLite and cannot be protected.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 23:00:00.000000
"""

from __future__ import annotations

from alembic import op
from sqlalchemy.engine import Connection

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("sweeps", "cells", "sweep_trials")


def upgrade() -> None:
    _recreate(autoincrement=True)


def downgrade() -> None:
    _recreate(autoincrement=False)


# The tables whose foreign keys point at the copied ones (and the copied ones themselves).
REFERENCING = ("cells", "sweep_trials", "curve_points", "suggestion_requests")


def _recreate(autoincrement: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    with op.get_context().autocommit_block():  # alembic's transaction committed; ours is explicit below
        bind.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            bind.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                if _has_autoincrement(bind) != autoincrement:  # another process may have done it meanwhile
                    before = _violations(bind)
                    for table in TABLES:
                        with op.batch_alter_table(
                            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
                        ):
                            pass
                    made = _violations(bind) - before
                    if made:
                        raise RuntimeError(f"migration 0005: the copy broke foreign keys: {sorted(made)[:5]}")
            except BaseException:
                bind.exec_driver_sql("ROLLBACK")
                raise
            bind.exec_driver_sql("COMMIT")
        finally:
            bind.exec_driver_sql("PRAGMA foreign_keys=ON")


def _has_autoincrement(bind: Connection) -> bool:
    sql = bind.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'sweeps'").scalar()
    return "AUTOINCREMENT" in str(sql).upper()


def _violations(bind: Connection) -> set[tuple[object, ...]]:
    rows: set[tuple[object, ...]] = set()
    for table in REFERENCING:
        # (table, rowid, parent table): not the key's index in the table's list, which the copy may reorder
        rows.update(tuple(r)[:3] for r in bind.exec_driver_sql(f"PRAGMA foreign_key_check({table})"))
    return rows
