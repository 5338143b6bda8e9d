"""Snapshots (issue 6): which templates are snapshots of which sandbox.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutch.api.store.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``snapshots``."""
    op.create_table(
        "snapshots",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("sandbox_id", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["id"], ["templates.id"], name="fk_snapshots_id_templates", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_snapshots_team_id_teams", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_snapshots"),
    )
    op.create_index(
        "ix_snapshots_team_id_created_at_id", "snapshots", ["team_id", "created_at", "id"]
    )
    op.create_index("ix_snapshots_sandbox_id", "snapshots", ["sandbox_id"])


def downgrade() -> None:
    """Drop ``snapshots``."""
    op.drop_table("snapshots")
