"""What a study's segmentation could not write besides its masks: ``studies.warnings``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28

A DICOM SEG that cannot be made, or a PACS that does not take the SEGs back, no longer fails or
retries the study: its masks are recorded and it goes on to its evaluation, and ``warnings``
(TEXT, NULL when there is none) keeps what failed, one line each.

Adding a column is an ``ALTER TABLE`` on SQLite too; dropping it (the downgrade) recreates the
table, and renaming the new table fails while a view reads a table that is gone, so there the
views of revision 0002 are dropped first and created again after (as revision 0004 does).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.sqlite_views import cohort_views_set_aside

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("warnings", sa.Text(), nullable=True))


def downgrade() -> None:
    with cohort_views_set_aside("0005"), op.batch_alter_table("studies") as batch:
        batch.drop_column("warnings")
