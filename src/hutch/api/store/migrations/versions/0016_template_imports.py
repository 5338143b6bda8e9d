"""Template imports from OCI images as jobs (issue 11, ADR 0030).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02

``template_imports``: one row per import (the request, its status, which api's worker runs
it and until when its lease holds, how many claims it has had, the latest progress per
stage, the outcome). A partial unique index allows one queued or running import per name.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutch.api.store.tables import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_ACTIVE = "status IN ('queued', 'running')"


def upgrade() -> None:
    """Create the table and its indexes."""
    op.create_table(
        "template_imports",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("progress", sa.Text, nullable=False, server_default="{}"),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("error_status", sa.Integer, nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_template_imports"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_template_imports_team_id_teams", ondelete="CASCADE"
        ),
    )
    op.create_index(
        "ix_template_imports_status_created_at", "template_imports", ["status", "created_at"]
    )
    op.create_index(
        "uq_template_imports_active_name",
        "template_imports",
        ["name"],
        unique=True,
        sqlite_where=sa.text(_ACTIVE),
        postgresql_where=sa.text(_ACTIVE),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_index("uq_template_imports_active_name", "template_imports")
    op.drop_index("ix_template_imports_status_created_at", "template_imports")
    op.drop_table("template_imports")
