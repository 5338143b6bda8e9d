"""Teams and admin keys (issue 16): a key's role.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

* ``api_keys.admin``: the key may act on every team (``/admin/...`` routes, ``hutch team``);
  existing keys stay members of their team (false).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column (existing keys: members, not admins)."""
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("admin", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    """Drop it."""
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("admin")
