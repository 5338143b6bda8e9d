"""Filesystem-only auto-pause (issue 18, gap 6): what a timeout's auto-pause keeps.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

* ``auto_pause_memory``: the create request's ``autoPauseMemory`` (default true): false
  makes the timeout's auto-pause keep only the filesystem (ADR 0004), so the resume
  reboots over the kept files.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column (existing rows: the auto-pause keeps memory, as before)."""
    with op.batch_alter_table("sandboxes") as batch:
        batch.add_column(
            sa.Column("auto_pause_memory", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    """Drop it."""
    with op.batch_alter_table("sandboxes") as batch:
        batch.drop_column("auto_pause_memory")
