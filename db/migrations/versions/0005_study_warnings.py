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

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


@contextmanager
def _views_set_aside() -> Iterator[None]:
    """On SQLite, drop the views of revision 0002 for the block and create them again after it."""
    if op.get_context().dialect.name != "sqlite":
        yield
        return
    script = op.get_context().script
    cohort_views = script.get_revision("0002") if script is not None else None
    if cohort_views is None:
        raise RuntimeError("revision 0005 needs revision 0002 in the script directory (its views)")
    views: dict[str, str] = cohort_views.module.VIEWS
    for name in reversed(views):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    yield
    for name, select in views.items():
        op.execute(f"CREATE VIEW {name} AS {select}")


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("warnings", sa.Text(), nullable=True))


def downgrade() -> None:
    with _views_set_aside(), op.batch_alter_table("studies") as batch:
        batch.drop_column("warnings")
