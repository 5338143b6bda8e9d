"""Cluster membership (issue 11, ADR 0025): one row per registered node.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02

* ``address``: how an api reaches the node's API (``http://host:port`` or
  ``unix:/path``); ``api_version`` / ``version``: its wire and hutch versions;
* capacity (``cpu_count``, ``memory_mb``, ``disk_mb``, ``max_sandboxes``) and ``labels``
  (JSON text), as the node registered them; ``used_*``: its last heartbeat's load;
  ``templates``: the templates it holds (JSON list), which placement prefers;
* ``boot_id``: the host boot the node runs in (a new one means its sandboxes are gone);
* ``status`` ``ready | draining | lost`` and when it changed (``lost_reason`` says why);
* ``registered_at``, ``heartbeat_at`` and ``lease_expires_at``, set with the store's clock;
* ``create_successes`` / ``create_fails``: E2B's ``Node`` counters;
* ``sandboxes.killed_reason``: why a sandbox was reported killed without a kill (its node
  was lost, or came back without it), shown in its logs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutch.api.store.tables import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``nodes``, add ``sandboxes.killed_reason``."""
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("address", sa.String(512), nullable=False),
        sa.Column("api_version", sa.String(16), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("boot_id", sa.String(64), nullable=False),
        sa.Column("cpu_count", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("disk_mb", sa.Integer(), nullable=False),
        sa.Column("max_sandboxes", sa.Integer(), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("templates", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("used_cpu_pct", sa.Float(), nullable=False, server_default="0"),
        sa.Column("used_memory_mb", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("used_disk_mb", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_changed_at", UTCDateTime(), nullable=False),
        sa.Column("lost_reason", sa.Text(), nullable=True),
        sa.Column("registered_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=False),
        sa.Column("create_successes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("create_fails", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_nodes"),
    )
    op.create_index("ix_nodes_status_lease_expires_at", "nodes", ["status", "lease_expires_at"])
    with op.batch_alter_table("sandboxes") as batch:
        batch.add_column(sa.Column("killed_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop ``nodes`` and ``sandboxes.killed_reason``."""
    with op.batch_alter_table("sandboxes") as batch:
        batch.drop_column("killed_reason")
    op.drop_index("ix_nodes_status_lease_expires_at", table_name="nodes")
    op.drop_table("nodes")
