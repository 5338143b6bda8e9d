"""Volumes: a team's named, quota-limited filesystems (issue 3, ADR 0008).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutch.api.store.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the ``volumes`` table."""
    op.create_table(
        "volumes",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("quota_bytes", sa.BigInteger(), nullable=False),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("token_secret", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_volumes"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_volumes_team_id_teams", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("team_id", "name", name="uq_volumes_team_id_name"),
    )


def downgrade() -> None:
    """Drop the ``volumes`` table (and every volume row)."""
    op.drop_table("volumes")
