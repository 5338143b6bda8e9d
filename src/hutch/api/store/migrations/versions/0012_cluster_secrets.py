"""Secrets shared by every api process (issue 11, ADR 0024).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

``cluster_secrets``: one row per named secret (the template upload-token key first), made
by the first api that needs it (insert-if-absent) and read by every other, so that an
upload URL one api signs is accepted by another.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutch.api.store.tables import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the table."""
    op.create_table(
        "cluster_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_table("cluster_secrets")
