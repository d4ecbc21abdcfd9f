"""sweeps.lease_epoch: the fencing token of a sweep's lease

Each claim of a sweep bumps its epoch; every write of a run is conditional on the epoch its writer claimed
(db.repository.fence), so a dispatcher that lost its lease (paused past it, cut off from the database) writes
nothing more once another has claimed the sweep.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 07:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, not batch mode: batch mode rebuilds a SQLite table (copy, DROP, rename), and dropping
# `sweeps` with foreign keys on would cascade to every cell and trial. SQLite has ADD COLUMN, and DROP COLUMN
# since 3.35 (2021).


def upgrade() -> None:
    op.add_column("sweeps", sa.Column("lease_epoch", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("sweeps", "lease_epoch")
