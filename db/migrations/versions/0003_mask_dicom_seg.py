"""Masks written as DICOM SEG too: where the SEG is and its checksum.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

A mask of a DICOM source is also written as a DICOM SEG object next to its NIfTI file;
``seg_uri`` and ``seg_sha256`` record it (NULL for the other sources).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("masks") as batch:
        batch.add_column(sa.Column("seg_uri", sa.Text(), nullable=True))
        batch.add_column(sa.Column("seg_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("masks") as batch:
        batch.drop_column("seg_sha256")
        batch.drop_column("seg_uri")
