"""Which nodes hold which template artifacts (issue 11, ADR 0029).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02

``artifact_holdings``: one row per (node template name, node): a template id, a
``name@build`` version or a snapshot id that the node has on its disk. ``state`` is
``held`` (placement prefers the node; peers fetch from it) or ``deleting`` (the template
was deleted while the node did not answer: removed on it when it next registers or beats).
Written when a node snapshots or fetches, and from what a node reports at registration
and heartbeat.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutch.api.store.tables import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``artifact_holdings``."""
    op.create_table(
        "artifact_holdings",
        sa.Column("artifact", sa.String(160), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("artifact", "node_id", name="pk_artifact_holdings"),
    )
    op.create_index("ix_artifact_holdings_node_id", "artifact_holdings", ["node_id"])


def downgrade() -> None:
    """Drop ``artifact_holdings``."""
    op.drop_index("ix_artifact_holdings_node_id", table_name="artifact_holdings")
    op.drop_table("artifact_holdings")
