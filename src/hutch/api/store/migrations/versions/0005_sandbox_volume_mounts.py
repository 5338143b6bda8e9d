"""Which sandboxes mount which volumes, at which path (issue 3, step 2).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``sandbox_volume_mounts``."""
    op.create_table(
        "sandbox_volume_mounts",
        sa.Column("sandbox_id", sa.String(64), nullable=False),
        sa.Column("volume_id", sa.String(64), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.PrimaryKeyConstraint("sandbox_id", "path", name="pk_sandbox_volume_mounts"),
        sa.ForeignKeyConstraint(
            ["sandbox_id"],
            ["sandboxes.id"],
            name="fk_sandbox_volume_mounts_sandbox_id_sandboxes",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_sandbox_volume_mounts_volume_id", "sandbox_volume_mounts", ["volume_id"])


def downgrade() -> None:
    """Drop ``sandbox_volume_mounts``."""
    op.drop_table("sandbox_volume_mounts")
