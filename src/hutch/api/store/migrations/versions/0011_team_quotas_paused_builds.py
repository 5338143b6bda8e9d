"""Two more team quotas (issue 16, ADR 0015): paused sandboxes kept, builds at once.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

Each column null: the team uses ``ApiSettings``' default; 0: no limit.

* ``max_paused_sandboxes``: how many paused sandboxes the team may keep (checked by the
  pause's own transaction);
* ``max_concurrent_builds``: how many of the team's template builds may run at once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_COLUMNS = ("max_paused_sandboxes", "max_concurrent_builds")


def upgrade() -> None:
    """Add the columns (existing teams: the defaults)."""
    with op.batch_alter_table("teams") as batch:
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("teams") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
