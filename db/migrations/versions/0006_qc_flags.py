"""Quality-control flags of predicted masks: table ``qc_flags``, ``masks.uncertainty`` and view ``run_qc``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

* ``qc_flags``: one row per flag the evaluation raised on a study's predicted masks (``workers.qc``):
  the study, the model, the frame (NULL for a flag of the study's cardiac indices), the structure
  (NULL when it concerns none), the flag's name, the value measured, the threshold it crossed,
  the severity (1 warning, 2 error) and a one-line reason. A study's flags for a model are
  replaced as a whole on each evaluation.
* ``masks.uncertainty``: the segmenter's uncertainty of each frame in [0, 1], NULL when it gives none.
* ``run_qc``: one row per study of a run: ``run, study_id, patient_id, pathology_group, status, n_flags,
  severity`` (the sum of the flags' severities, 0 when none) ``, flags`` (the reasons joined with
  ``'; '``, most severe first, ``''`` when none); ``SELECT * FROM run_qc WHERE run = 'x' ORDER BY
  severity DESC`` runs on both databases. The reasons are joined by ``string_agg`` on PostgreSQL and
  ``group_concat`` over an ordered subquery on SQLite (whose aggregates take no ``ORDER BY`` before 3.44).

Dropping ``masks.uncertainty`` (the downgrade) recreates the table on SQLite, and renaming the new
table fails while a view reads a table that is gone, so there the views of revision 0002 are dropped
first and created again after (as revisions 0004 and 0005 do). A later revision that recreates
``studies``, ``runs`` or ``qc_flags`` on SQLite must set ``run_qc`` aside too (:data:`VIEWS`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.sqlite_views import cohort_views_set_aside

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_RUN_QC = """
SELECT r.name AS run, s.id AS study_id, s.patient_id, s.pathology_group, s.status,
       (SELECT COUNT(*) FROM qc_flags q WHERE q.study_id = s.id AND q.model_id = r.model_id) AS n_flags,
       (SELECT COALESCE(SUM(q.severity), 0) FROM qc_flags q
        WHERE q.study_id = s.id AND q.model_id = r.model_id) AS severity,
       {flags} AS flags
FROM studies s JOIN runs r ON r.id = s.run_id
"""
_FLAGS = {
    "postgresql": "(SELECT COALESCE(string_agg(q.reason, '; ' ORDER BY q.severity DESC, q.id), '') FROM qc_flags q "
                  "WHERE q.study_id = s.id AND q.model_id = r.model_id)",
    "sqlite": "(SELECT COALESCE(group_concat(o.reason, '; '), '') FROM (SELECT q.reason FROM qc_flags q "
              "WHERE q.study_id = s.id AND q.model_id = r.model_id ORDER BY q.severity DESC, q.id) o)",
}


def run_qc_select(dialect: str) -> str:
    """The ``SELECT`` of view ``run_qc`` for ``dialect`` (``postgresql`` or ``sqlite``)."""
    return _RUN_QC.format(flags=_FLAGS[dialect])


#: The views this revision creates, as ``{name: select for a dialect}``.
VIEWS = {"run_qc": run_qc_select}


def upgrade() -> None:
    with op.batch_alter_table("masks") as batch:
        batch.add_column(sa.Column("uncertainty", sa.Double(), nullable=True))
    op.create_table(
        "qc_flags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("frame", sa.Integer(), nullable=True),
        sa.Column("structure", sa.Enum("RV", "MYO", "LV", name="structure", native_enum=False, create_constraint=True,
                                       length=16), nullable=True),
        sa.Column("flag", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("severity", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.CheckConstraint("severity IN (1, 2)", name=op.f("ck_qc_flags_severity")),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_qc_flags_model_id_models")),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name=op.f("fk_qc_flags_study_id_studies"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qc_flags")),
    )
    op.create_index(op.f("ix_qc_flags_study_id"), "qc_flags", ["study_id"], unique=False)
    dialect = op.get_context().dialect.name
    for name, select in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {select(dialect)}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_index(op.f("ix_qc_flags_study_id"), table_name="qc_flags")
    op.drop_table("qc_flags")
    with cohort_views_set_aside("0006"), op.batch_alter_table("masks") as batch:
        batch.drop_column("uncertainty")
