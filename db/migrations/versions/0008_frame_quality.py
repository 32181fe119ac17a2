"""The segmenter's quality signals and predicted Dice: table ``frame_quality``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

* ``frame_quality``: one row per study, model, frame and structure, recorded with the masks
  (``workers.quality``): the frame's phase, the calibrated ``predicted_dice`` (NULL without a
  calibration), ``self_dice`` (each network's soft Dice against its own labels, averaged over the
  folds), ``entropy`` (the mean normalised entropy over the structure, averaged over the folds that
  label it; NULL when none does), ``fold_agreement`` (NULL with one fold), ``n_folds`` and
  ``volume_ml``. Unique per (study, model, frame, structure); every value is checked to its range.

A new table that no view reads: nothing is set aside on SQLite, either way.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "frame_quality",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("frame", sa.Integer(), nullable=False),
        sa.Column("phase", sa.Enum("ED", "ES", "other", name="phase", native_enum=False, create_constraint=True,
                                   length=16), nullable=False),
        sa.Column("structure", sa.Enum("RV", "MYO", "LV", name="structure", native_enum=False, create_constraint=True,
                                       length=16), nullable=False),
        sa.Column("predicted_dice", sa.Double(), nullable=True),
        sa.Column("self_dice", sa.Double(), nullable=False),
        sa.Column("entropy", sa.Double(), nullable=True),
        sa.Column("fold_agreement", sa.Double(), nullable=True),
        sa.Column("n_folds", sa.Integer(), nullable=False),
        sa.Column("volume_ml", sa.Double(), nullable=False),
        sa.CheckConstraint("predicted_dice IS NULL OR (predicted_dice >= 0 AND predicted_dice <= 1)",
                           name=op.f("ck_frame_quality_predicted_dice_range")),
        sa.CheckConstraint("self_dice >= 0 AND self_dice <= 1", name=op.f("ck_frame_quality_self_dice_range")),
        sa.CheckConstraint("entropy IS NULL OR (entropy >= 0 AND entropy <= 1)",
                           name=op.f("ck_frame_quality_entropy_range")),
        sa.CheckConstraint("fold_agreement IS NULL OR (fold_agreement >= 0 AND fold_agreement <= 1)",
                           name=op.f("ck_frame_quality_fold_agreement_range")),
        sa.CheckConstraint("n_folds >= 1", name=op.f("ck_frame_quality_n_folds")),
        sa.CheckConstraint("volume_ml >= 0", name=op.f("ck_frame_quality_volume")),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_frame_quality_model_id_models")),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name=op.f("fk_frame_quality_study_id_studies"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_frame_quality")),
        sa.UniqueConstraint("study_id", "model_id", "frame", "structure",
                            name=op.f("uq_frame_quality_study_id_model_id_frame_structure")),
    )
    op.create_index(op.f("ix_frame_quality_study_id"), "frame_quality", ["study_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_frame_quality_study_id"), table_name="frame_quality")
    op.drop_table("frame_quality")
