"""When each SDK build archive was last asked for (issue 11, ADR 0037).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03

``build_files.used_at``: the last time the SDK's ``GET /templates/{id}/files/{hash}`` was
answered "present" for the archive (or it was uploaded, or pushed to a building node). The
elected leader's sweep deletes archives not used within ``HUTCH_BUILD_FILES_RETENTION_S``
that no unfinished build names; before, they were kept for ever (the SDK skips uploading
a hash that is present, so nothing ever replaced them). Rows of before take their
``created_at``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutch.api.store.tables import UTCDateTime

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``build_files.used_at`` (``created_at`` for the rows there) and its index."""
    with op.batch_alter_table("build_files") as batch:
        batch.add_column(sa.Column("used_at", UTCDateTime(), nullable=True))
    op.execute("UPDATE build_files SET used_at = created_at")
    with op.batch_alter_table("build_files") as batch:
        batch.alter_column("used_at", existing_type=UTCDateTime(), nullable=False)
    op.create_index("ix_build_files_used_at", "build_files", ["used_at"])


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ix_build_files_used_at", table_name="build_files")
    with op.batch_alter_table("build_files") as batch:
        batch.drop_column("used_at")
