"""What an unattended run needs: ``studies.enqueued_at`` and the ``workers`` table.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

* ``studies.enqueued_at``: when the message of the study's current stage was last sent (its segment
  message while ``queued``, its evaluation message once ``segmented``). The reconciler sends it again
  when the study made no progress for ``HEARTSEG_STALL_S`` since (a message the broker lost).
  Existing rows take their ``queued_at``.
* ``workers``: one row per Celery worker, its heartbeat: name, queue, device, model fingerprint,
  HeartSeg version, host and pid, when it started and was last seen, and the error it last met
  (a start that failed included).

Dropping the column (the downgrade) recreates ``studies`` on SQLite, so there the cohort views and
``run_qc`` are set aside first and created again after.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.sqlite_views import cohort_views_set_aside

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE studies SET enqueued_at = queued_at")
    op.create_table(
        "workers",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("queue", sa.String(length=32), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=True),
        sa.Column("model_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_workers")),
    )


def downgrade() -> None:
    op.drop_table("workers")
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        op.execute("DROP VIEW IF EXISTS run_qc")
    with cohort_views_set_aside("0007"), op.batch_alter_table("studies") as batch:
        batch.drop_column("enqueued_at")
    if dialect == "sqlite":
        script = op.get_context().script
        qc = script.get_revision("0006") if script is not None else None
        if qc is None:
            raise RuntimeError("revision 0007 needs revision 0006 in the script directory (view run_qc)")
        for name, select in qc.module.VIEWS.items():
            op.execute(f"CREATE VIEW {name} AS {select(dialect)}")
