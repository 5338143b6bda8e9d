"""SDK template builds as jobs in the store (issue 11, ADR 0024).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02

``template_builds``: one row per requested build (status, the start request, which api's
worker runs it and its last heartbeat, the failure reason); ``template_build_logs``: its
log lines in order. Any api answers a build's status and logs; a started build is claimed
by one worker (``FOR UPDATE SKIP LOCKED`` on PostgreSQL); a build whose worker stopped
heartbeating is marked failed with that reason.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutch.api.store.tables import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the two tables."""
    op.create_table(
        "template_builds",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("template_id", sa.String(64), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cpu_count", sa.Integer, nullable=False),
        sa.Column("memory_mb", sa.Integer, nullable=False),
        sa.Column("first", sa.Boolean, nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("start", sa.Text, nullable=True),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("reason_step", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_template_builds"),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name="fk_template_builds_team_id_teams",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_template_builds_template_id_team_id", "template_builds", ["template_id", "team_id"]
    )
    op.create_index(
        "ix_template_builds_status_created_at", "template_builds", ["status", "created_at"]
    )
    op.create_table(
        "template_build_logs",
        sa.Column("build_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("step", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("build_id", "seq", name="pk_template_build_logs"),
        sa.ForeignKeyConstraint(
            ["build_id"],
            ["template_builds.id"],
            name="fk_template_build_logs_build_id_template_builds",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_table("template_build_logs")
    op.drop_index("ix_template_builds_status_created_at", "template_builds")
    op.drop_index("ix_template_builds_template_id_team_id", "template_builds")
    op.drop_table("template_builds")
