"""A snapshot carries its sandbox's network policy (issue 13).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02

* ``snapshots.network``: JSON of the source sandbox's ``network`` when the snapshot was
  taken (the same shape as ``sandboxes.network``); a sandbox created from the snapshot
  (and so a fork) gets it unless its create sends a policy of its own. Null for
  snapshots made before, and for sandboxes with the default (all egress, public ports).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable column."""
    with op.batch_alter_table("snapshots") as batch:
        batch.add_column(sa.Column("network", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop it."""
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_column("network")
