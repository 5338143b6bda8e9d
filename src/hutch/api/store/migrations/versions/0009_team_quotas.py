"""Per-team quotas (issue 16, ADR 0015): an admin's overrides of the settings' defaults.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

Each column null: the team uses ``ApiSettings``' default; 0: no limit.

* ``max_running_sandboxes``, ``max_vcpus``, ``max_memory_mb``: what the team's running
  sandboxes may hold together, reserved in the create's own transaction;
* ``max_timeout_s``: the longest timeout a create may ask for;
* ``max_volume_bytes``: the total size (quota) of the team's volumes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("max_running_sandboxes", sa.Integer()),
    ("max_vcpus", sa.Integer()),
    ("max_memory_mb", sa.Integer()),
    ("max_timeout_s", sa.Integer()),
    ("max_volume_bytes", sa.BigInteger()),
)


def upgrade() -> None:
    """Add the columns (existing teams: the defaults)."""
    with op.batch_alter_table("teams") as batch:
        for name, type_ in _COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("teams") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
