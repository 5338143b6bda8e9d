"""Pause and resume (issue 6, ADR 0004): how a sandbox was paused, auto-resume, its timeout.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

* ``pause_mode``: ``full`` (memory kept) or ``filesystem`` (files only) of the last pause,
  ``NULL`` for a sandbox never paused (``SandboxDetail.pauseMode``);
* ``auto_resume``: traffic through the proxy resumes the paused sandbox;
* ``timeout_s``: the timeout the sandbox was created with; a resume by traffic restarts it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the three columns (existing rows: never paused, no auto-resume)."""
    with op.batch_alter_table("sandboxes") as batch:
        batch.add_column(sa.Column("pause_mode", sa.String(16), nullable=True))
        batch.add_column(
            sa.Column("auto_resume", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("timeout_s", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("sandboxes") as batch:
        batch.drop_column("timeout_s")
        batch.drop_column("auto_resume")
        batch.drop_column("pause_mode")
