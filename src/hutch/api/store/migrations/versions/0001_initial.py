"""Initial schema: teams, API keys, templates, sandboxes, metadata, idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Written out by hand (not ``metadata.create_all``) so that this migration never changes
when ``tables.py`` does; ``tests/integration/store/test_migrations.py`` checks that the
migrated schema equals ``tables.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutch.api.store.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create every table of the first release."""
    op.create_table(
        "teams",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_teams"),
        sa.UniqueConstraint("name", name="uq_teams_name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("mask", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_api_keys_team_id_teams", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_team_id", "api_keys", ["team_id"])
    op.create_table(
        "templates",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("alias", sa.String(255), nullable=True),
        sa.Column("build_state", sa.String(16), nullable=False),
        sa.Column("cpu_count", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("disk_mb", sa.Integer(), nullable=False),
        sa.Column("envd_version", sa.String(32), nullable=True),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_templates"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_templates_team_id_teams", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("alias", name="uq_templates_alias"),
    )
    op.create_index("ix_templates_team_id", "templates", ["team_id"])
    op.create_table(
        "sandboxes",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("template_id", sa.String(64), nullable=False),
        sa.Column("alias", sa.String(255), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("cpu_count", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("disk_mb", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("end_at", UTCDateTime(), nullable=False),
        sa.Column("envd_access_token", sa.String(255), nullable=True),
        sa.Column("envd_version", sa.String(32), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=True),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("auto_pause", sa.Boolean(), nullable=False),
        sa.Column("allow_internet", sa.Boolean(), nullable=False),
        sa.Column("env_vars", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sandboxes"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_sandboxes_team_id_teams", ondelete="CASCADE"
        ),
    )
    op.create_index(
        "ix_sandboxes_team_id_started_at_id", "sandboxes", ["team_id", "started_at", "id"]
    )
    op.create_index("ix_sandboxes_state_end_at", "sandboxes", ["state", "end_at"])
    op.create_index("ix_sandboxes_node_id_state", "sandboxes", ["node_id", "state"])
    op.create_table(
        "sandbox_metadata",
        sa.Column("sandbox_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("sandbox_id", "key", name="pk_sandbox_metadata"),
        sa.ForeignKeyConstraint(
            ["sandbox_id"],
            ["sandboxes.id"],
            name="fk_sandbox_metadata_sandbox_id_sandboxes",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_sandbox_metadata_key_value", "sandbox_metadata", ["key", "value"])
    op.create_table(
        "idempotency_keys",
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("sandbox_id", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("team_id", "key", name="pk_idempotency_keys"),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name="fk_idempotency_keys_team_id_teams",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sandbox_id"],
            ["sandboxes.id"],
            name="fk_idempotency_keys_sandbox_id_sandboxes",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_idempotency_keys_sandbox_id", "idempotency_keys", ["sandbox_id"])


def downgrade() -> None:
    """Drop everything (development only: it destroys all data)."""
    for table in (
        "idempotency_keys",
        "sandbox_metadata",
        "sandboxes",
        "templates",
        "api_keys",
        "teams",
    ):
        op.drop_table(table)
