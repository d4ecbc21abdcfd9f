"""external trials: per-trial leases, the sweep's executor, and stored suggestion responses

A sweep with `executor: external` is run by outside workers over REST (sweep_service.external): each trial
they take carries a lease (`sweep_trials.lease_expires_at`, the holder in the existing `worker` column) that
their heartbeats extend; `sweeps.executor` lets a dispatcher skip such sweeps in SQL; and
`suggestion_requests` keeps the answer to each `POST /sweeps/{id}/suggestions` that carried an
Idempotency-Key, so a retried request gets the same trials.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 07:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sweeps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("executor", sa.String(16), nullable=False, server_default="ray"))
    with op.batch_alter_table("sweep_trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(), nullable=True))
    op.create_table(
        "suggestion_requests",
        sa.Column("sweep_id", sa.Integer(), sa.ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("suggestion_requests")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35, PostgreSQL): batch mode would copy and drop `sweeps`, and
    # dropping it with SQLite's foreign keys on (db/session.py) cascades to every cell and trial.
    op.execute("ALTER TABLE sweep_trials DROP COLUMN lease_expires_at")
    op.execute("ALTER TABLE sweeps DROP COLUMN executor")
