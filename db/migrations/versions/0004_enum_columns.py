"""Closed sets as enum columns: ``runs.frames`` and both ``phase_source`` columns.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

The stored strings stay as they are; what changes is the check on them. ``runs.frames``
(``ed-es`` or ``all``) widens to VARCHAR(16) like every enum column, and its CHECK is now the
enum type's own, ``ck_runs_run_frames``, in place of ``ck_runs_frames``. ``studies.phase_source``
and ``cardiac_indices.phase_source`` (``stated`` or ``lv_volume``) get a CHECK,
``ck_<table>_phase_source``. Alembic adds and drops an enum type's CHECK with the
``alter_column`` that changes the type.

SQLite alters a table by recreating it, and renaming the new table fails while a view reads a
table that is gone, so there the views of revision 0002 are dropped first and created again
after.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.sqlite_views import cohort_views_set_aside

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PHASE_SOURCE_TABLES = (("studies", True), ("cardiac_indices", False))  # (table, phase_source nullable)


def _frames() -> sa.Enum:
    return sa.Enum("ed-es", "all", name="run_frames", native_enum=False, create_constraint=True, length=16)


def _phase_source() -> sa.Enum:
    return sa.Enum("stated", "lv_volume", name="phase_source", native_enum=False, create_constraint=True, length=16)


def upgrade() -> None:
    with cohort_views_set_aside("0004"):
        with op.batch_alter_table("runs") as batch:
            batch.drop_constraint(op.f("ck_runs_frames"), type_="check")
            batch.alter_column("frames", existing_type=sa.String(length=8), type_=_frames(),
                               existing_nullable=False)
        for table, nullable in PHASE_SOURCE_TABLES:
            with op.batch_alter_table(table) as batch:
                batch.alter_column("phase_source", existing_type=sa.String(length=16), type_=_phase_source(),
                                   existing_nullable=nullable)


def downgrade() -> None:
    with cohort_views_set_aside("0004"):
        for table, nullable in reversed(PHASE_SOURCE_TABLES):
            with op.batch_alter_table(table) as batch:
                batch.alter_column("phase_source", existing_type=_phase_source(), type_=sa.String(length=16),
                                   existing_nullable=nullable)
        with op.batch_alter_table("runs") as batch:
            batch.alter_column("frames", existing_type=_frames(), type_=sa.String(length=8), existing_nullable=False)
            batch.create_check_constraint(op.f("ck_runs_frames"), "frames IN ('ed-es', 'all')")
