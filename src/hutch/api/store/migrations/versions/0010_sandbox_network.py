"""Per-sandbox network policy (issue 13): the ``network`` of a create, and the traffic token.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

* ``network``: JSON of the sandbox's egress policy (``allowOut``/``denyOut``/
  ``dnsServers`` as given), ``allowPublicTraffic`` and ``maskRequestHost``; null for
  sandboxes made before (the default: all egress, public ports);
* ``traffic_access_token``: what the proxy wants in ``e2b-traffic-access-token`` when
  ``allowPublicTraffic`` is false.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the two nullable columns."""
    with op.batch_alter_table("sandboxes") as batch:
        batch.add_column(sa.Column("network", sa.Text(), nullable=True))
        batch.add_column(sa.Column("traffic_access_token", sa.String(255), nullable=True))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("sandboxes") as batch:
        batch.drop_column("traffic_access_token")
        batch.drop_column("network")
