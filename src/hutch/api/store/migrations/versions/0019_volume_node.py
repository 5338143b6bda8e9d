"""A local volume's node (issue 11, ADR 0034).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02

``volumes.node_id``: the node a local volume's first mount ran on, claimed in the
transaction that records that mount; placement sends every later create that mounts the
volume there. Before, the node was read from the newest mount's sandbox outside the
create's transaction, so two first mounts could land on two nodes and a later mount went
wherever the newest sandbox had been. Existing volumes take the node of their oldest
mount that had one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``volumes.node_id`` and fill it from the mounts recorded so far."""
    with op.batch_alter_table("volumes") as batch:
        batch.add_column(sa.Column("node_id", sa.String(64), nullable=True))
    op.execute(
        """
        UPDATE volumes SET node_id = (
            SELECT s.node_id FROM sandbox_volume_mounts m
            JOIN sandboxes s ON s.id = m.sandbox_id
            WHERE m.volume_id = volumes.id AND s.node_id IS NOT NULL
            ORDER BY s.started_at ASC LIMIT 1
        )
        WHERE backend = 'local'
        """
    )


def downgrade() -> None:
    """Drop ``volumes.node_id``."""
    with op.batch_alter_table("volumes") as batch:
        batch.drop_column("node_id")
