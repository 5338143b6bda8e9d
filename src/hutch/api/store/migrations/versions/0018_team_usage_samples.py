"""Team usage samples in the store (issue 11).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02

``team_usage_samples``: one row per (team, sample time) with the team's concurrent
sandboxes and start rate (per second), written by the elected leader's usage sampler and
read by every api (``GET /teams/{id}/metrics``, ``/metrics/max``); rows older than the
retention (24 h) are deleted by the leader. Before, the samples lived in the leader's
memory: another api answered an empty series, and a leader change lost them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutch.api.store.tables import UTCDateTime

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``team_usage_samples``."""
    op.create_table(
        "team_usage_samples",
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("concurrent", sa.Integer(), nullable=False),
        sa.Column("start_rate", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("team_id", "at", name="pk_team_usage_samples"),
    )
    op.create_index("ix_team_usage_samples_at", "team_usage_samples", ["at"])


def downgrade() -> None:
    """Drop ``team_usage_samples``."""
    op.drop_index("ix_team_usage_samples_at", table_name="team_usage_samples")
    op.drop_table("team_usage_samples")
