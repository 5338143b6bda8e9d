"""The node process's incarnation on its row (issue 11, ADR 0033).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02

``nodes.incarnation``: a random id the node process draws at start and registers with. A
registration of the same boot id and incarnation is the same live process coming back
(its lease lost to a partition, a refused heartbeat): its rows still ``creating`` are
creates it is making, kept; only a previous incarnation's are cleaned.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``nodes.incarnation`` ("" for rows of older nodes)."""
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("incarnation", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    """Drop it."""
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("incarnation")
