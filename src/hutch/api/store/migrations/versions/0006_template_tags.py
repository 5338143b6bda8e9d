"""E2B template tags (issue 4): ``template_tags`` and the build a sandbox was started from.

* ``template_tags``: ``(template_id, tag)`` → ``build_id``; removed with the template.
* ``sandboxes.template_build_id``: the build a ``name:tag`` create chose (NULL: current).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutch.api.store.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``template_tags``; add ``sandboxes.template_build_id``."""
    op.create_table(
        "template_tags",
        sa.Column("template_id", sa.String(64), nullable=False),
        sa.Column("tag", sa.String(128), nullable=False),
        sa.Column("build_id", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("template_id", "tag", name="pk_template_tags"),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name="fk_template_tags_template_id_templates",
            ondelete="CASCADE",
        ),
    )
    with op.batch_alter_table("sandboxes") as batch:
        batch.add_column(sa.Column("template_build_id", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("sandboxes") as batch:
        batch.drop_column("template_build_id")
    op.drop_table("template_tags")
