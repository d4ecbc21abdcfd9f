"""initial schema: sweeps, cells, sweep_trials, curve_points

Revision ID: 0001
Revises:
Create Date: 2026-11-23 12:19:48.171598
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("imported", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    with op.batch_alter_table("sweeps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sweeps_status"), ["status"], unique=False)

    op.create_table(
        "cells",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("optimizer", sa.String(length=64), nullable=False),
        sa.Column("scale", sa.String(length=64), nullable=False),
        sa.Column("chinchilla", sa.Float(), nullable=False),
        sa.Column("strategy", sa.String(length=32), nullable=False),
        sa.Column("space", sa.JSON(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("best_trial_id", sa.Integer(), nullable=True),
        sa.Column("best_loss", sa.Float(), nullable=True),
        sa.Column("best_config", sa.JSON(), nullable=True),
        sa.Column("near_ties", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["sweep_id"], ["sweeps.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sweep_id", "key"),
    )
    with op.batch_alter_table("cells", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cells_chinchilla"), ["chinchilla"], unique=False)
        batch_op.create_index(batch_op.f("ix_cells_optimizer"), ["optimizer"], unique=False)
        batch_op.create_index(batch_op.f("ix_cells_scale"), ["scale"], unique=False)
        batch_op.create_index(batch_op.f("ix_cells_sweep_id"), ["sweep_id"], unique=False)

    op.create_table(
        "sweep_trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("cell_id", sa.Integer(), nullable=False),
        sa.Column("config_key", sa.String(length=1000), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("final_loss", sa.Float(), nullable=True),
        sa.Column("initial_loss", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("steps", sa.Integer(), nullable=True),
        sa.Column("total_steps", sa.Integer(), nullable=True),
        sa.Column("tokens", sa.BigInteger(), nullable=True),
        sa.Column("tokens_per_second", sa.Float(), nullable=True),
        sa.Column("device_seconds", sa.Float(), nullable=True),
        sa.Column("repro", sa.JSON(), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("optuna_trial", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["cell_id"], ["cells.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["sweep_id"], ["sweeps.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cell_id", "config_key", "seed"),
    )
    with op.batch_alter_table("sweep_trials", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sweep_trials_cell_id"), ["cell_id"], unique=False)
        batch_op.create_index("ix_sweep_trials_sweep_status", ["sweep_id", "status"], unique=False)

    op.create_table(
        "curve_points",
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("eval_loss", sa.Float(), nullable=True),
        sa.Column("train_loss", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["trial_id"], ["sweep_trials.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trial_id", "step"),
    )


def downgrade() -> None:
    op.drop_table("curve_points")
    with op.batch_alter_table("sweep_trials", schema=None) as batch_op:
        batch_op.drop_index("ix_sweep_trials_sweep_status")
        batch_op.drop_index(batch_op.f("ix_sweep_trials_cell_id"))

    op.drop_table("sweep_trials")
    with op.batch_alter_table("cells", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cells_sweep_id"))
        batch_op.drop_index(batch_op.f("ix_cells_scale"))
        batch_op.drop_index(batch_op.f("ix_cells_optimizer"))
        batch_op.drop_index(batch_op.f("ix_cells_chinchilla"))

    op.drop_table("cells")
    with op.batch_alter_table("sweeps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sweeps_status"))

    op.drop_table("sweeps")
