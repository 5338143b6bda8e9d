"""SDK build archives in the store for a cluster api (issue 11).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02

``build_files`` (one row per uploaded archive, written once every chunk is in) and
``build_file_chunks`` (its bytes, in order): a cluster api whose nodes register has no
node at upload time (a build is placed when it starts), so the SDK's ``COPY`` archives are
kept here and pushed to the node the build runs on. Before, they went to the one node an
api was configured with; an api whose nodes register refused builds (400).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutch.api.store.tables import UTCDateTime

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``build_files`` and ``build_file_chunks``."""
    op.create_table(
        "build_files",
        sa.Column("files_hash", sa.String(128), primary_key=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "build_file_chunks",
        sa.Column("files_hash", sa.String(128), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("files_hash", "seq", name="pk_build_file_chunks"),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_table("build_file_chunks")
    op.drop_table("build_files")
