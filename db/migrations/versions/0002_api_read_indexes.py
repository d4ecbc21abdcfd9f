"""indexes for the API's reads: a sweep's trials page and its progress

With 100k trials (bench/api_load.py), GET /sweeps/{id}/trials sorted a sweep's trials by id to reach its
offset, and GET /sweeps/{id} read every row of the sweep for its counts, compute used and time left.
(sweep_id, id) gives the page in index order; (sweep_id, cell_id, status, device_seconds, started_at,
finished_at) answers the progress from the index alone (db.queries.sweep_trial_stats).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 04:40:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PROGRESS_COLUMNS = ["sweep_id", "cell_id", "status", "device_seconds", "started_at", "finished_at"]


def upgrade() -> None:
    with op.batch_alter_table("sweep_trials", schema=None) as batch_op:
        batch_op.create_index("ix_sweep_trials_sweep_id_id", ["sweep_id", "id"], unique=False)
        batch_op.create_index("ix_sweep_trials_progress", PROGRESS_COLUMNS, unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sweep_trials", schema=None) as batch_op:
        batch_op.drop_index("ix_sweep_trials_progress")
        batch_op.drop_index("ix_sweep_trials_sweep_id_id")
