"""ids are never handed out twice: SQLite's sweeps, cells and trials tables get AUTOINCREMENT

Without it SQLite gives a new row max(id) + 1, so deleting the newest sweep (DELETE /sweeps/{id}) let the next
POST /sweeps take its id, and its cells' and trials' ids went to the next sweep's: a client still holding
`/sweeps/7` or `/trials/812` got somebody else's. With AUTOINCREMENT SQLite keeps the largest id ever used
(sqlite_sequence). PostgreSQL's sequences never reuse an id: nothing to do there.

SQLite cannot add AUTOINCREMENT to a table, so each table is copied into a new one (batch mode, recreate). Its
foreign keys are switched off meanwhile: with them on, dropping the old `sweeps` would cascade (ON DELETE CASCADE)
to every cell and trial. The copy keeps every row, index and constraint; the migration checks the foreign keys
before it ends. Ids deleted before this migration were already forgotten by SQLite and cannot be protected.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 23:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("sweeps", "cells", "sweep_trials")


def upgrade() -> None:
    _recreate(autoincrement=True)


def downgrade() -> None:
    _recreate(autoincrement=False)


def _recreate(autoincrement: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    context = op.get_context()
    with context.autocommit_block():  # PRAGMA foreign_keys is a no-op inside a transaction
        op.execute("PRAGMA foreign_keys=OFF")
    try:
        for table in TABLES:
            with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}):
                pass
        broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"migration 0005: foreign keys broken by the copy: {broken[:5]}")
    finally:
        with context.autocommit_block():
            op.execute("PRAGMA foreign_keys=ON")
