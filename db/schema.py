"""The record's schema: SQLAlchemy 2.0 typed ORM tables.

Names are chosen for people writing SQL by hand: one table per thing, plural names,
``<table>_id`` foreign keys, units in column names (``_ml``, ``_mm``, ``_pct``, ``_g``).
Undefined values (Dice of two empty masks, a distance to an empty mask) are stored as
NULL, so ``avg()`` and friends skip them.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from heartseg.enums import Frames, IndexSource, PhaseSource, StudyStatus
from heartseg.labels import Phase, Structure

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with stable constraint names for migrations."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _enum(kind: type[enum.Enum], name: str) -> Enum:
    """The column type for members of ``kind``: their values as VARCHAR(16), checked by ``ck_<table>_<name>``."""
    return Enum(kind, name=name, native_enum=False, create_constraint=True, length=16,
                values_callable=lambda members: [m.value for m in members], validate_strings=True)


#: The longest run name, patient identifier or worker name the record keeps (characters).
NAME_LENGTH = 200

IntPK = Annotated[int, mapped_column(Integer, primary_key=True)]
Created = Annotated[datetime, mapped_column(DateTime(timezone=True), server_default=func.now())]
Ml = Annotated[float | None, mapped_column(Float)]


class Model(Base):
    """A trained nnU-Net model as used: its fingerprint plus the inference settings."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("fingerprint", "use_mirroring", "tile_step_size"),)

    id: Mapped[IntPK]
    fingerprint: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    configuration: Mapped[str | None] = mapped_column(String(64))
    folds: Mapped[str] = mapped_column(String(64))
    checkpoint_name: Mapped[str] = mapped_column(String(128))
    use_mirroring: Mapped[bool]
    tile_step_size: Mapped[float] = mapped_column(Float)
    created_at: Mapped[Created]


class Run(Base):
    """One reprocessing job: a source, a model, the frames asked for."""

    __tablename__ = "runs"

    id: Mapped[IntPK]
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    source_uri: Mapped[str] = mapped_column(Text)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    frames: Mapped[Frames] = mapped_column(_enum(Frames, "run_frames"))
    created_at: Mapped[Created]
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Study(Base):
    """One patient or series within a run, and where it is in its life."""

    __tablename__ = "studies"
    __table_args__ = (
        UniqueConstraint("run_id", "source_uri"),
        CheckConstraint("attempts >= 0", name="attempts"),
        Index("ix_studies_run_id_status", "run_id", "status"),  # a run's studies per status (revision 0009)
    )

    id: Mapped[IntPK]
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    source_uri: Mapped[str] = mapped_column(Text)
    patient_id: Mapped[str] = mapped_column(String(NAME_LENGTH))
    pathology_group: Mapped[str | None] = mapped_column(String(32))
    height_cm: Mapped[float | None]
    weight_kg: Mapped[float | None]
    n_frames: Mapped[int | None]
    ed_frame: Mapped[int | None]
    es_frame: Mapped[int | None]
    phase_source: Mapped[PhaseSource | None] = mapped_column(_enum(PhaseSource, "phase_source"))
    status: Mapped[StudyStatus] = mapped_column(_enum(StudyStatus, "study_status"), default=StudyStatus.QUEUED,
                                                index=True)
    error: Mapped[str | None] = mapped_column(Text)
    warnings: Mapped[str | None] = mapped_column(Text)
    """What its segmentation could not write besides the masks (a DICOM SEG, storing SEGs back to a PACS),
    one line each; NULL when nothing. The study goes on all the same."""
    attempts: Mapped[int] = mapped_column(default=0)
    worker: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    queued_at: Mapped[Created]
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When the message of its current stage was last sent (segment while queued, evaluate once segmented);
    the reconciler sends it again when the study made no progress for ``HEARTSEG_STALL_S`` since."""
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    segmented_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    load_s: Mapped[float | None]
    predict_s: Mapped[float | None]
    write_s: Mapped[float | None]
    metrics_s: Mapped[float | None]


class Mask(Base):
    """One predicted label map: a study frame segmented by a model."""

    __tablename__ = "masks"
    __table_args__ = (UniqueConstraint("study_id", "model_id", "frame"),)

    id: Mapped[IntPK]
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    frame: Mapped[int]
    phase: Mapped[Phase] = mapped_column(_enum(Phase, "phase"))
    uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    shape: Mapped[str] = mapped_column(String(64))
    spacing_x_mm: Mapped[float]
    spacing_y_mm: Mapped[float]
    spacing_z_mm: Mapped[float]
    seg_uri: Mapped[str | None] = mapped_column(Text)
    """The same mask as a DICOM SEG object (DICOM sources only)."""
    seg_sha256: Mapped[str | None] = mapped_column(String(64))
    uncertainty: Mapped[float | None]
    """The segmenter's uncertainty of the frame in [0, 1] (mean normalised softmax entropy over the heart);
    NULL when the segmenter gives none."""
    created_at: Mapped[Created]


class Metric(Base):
    """Agreement of one structure in one frame with its reference."""

    __tablename__ = "metrics"
    __table_args__ = (
        UniqueConstraint("study_id", "model_id", "frame", "structure"),
        CheckConstraint("dice IS NULL OR (dice >= 0 AND dice <= 1)", name="dice_range"),
        CheckConstraint("iou IS NULL OR (iou >= 0 AND iou <= 1)", name="iou_range"),
        CheckConstraint("(dice IS NULL) = (tp + fp + fn = 0)", name="dice_defined"),
        CheckConstraint("tp >= 0 AND fp >= 0 AND fn >= 0", name="counts"),
        CheckConstraint("vol_pred_ml >= 0 AND vol_ref_ml >= 0", name="volumes"),
        CheckConstraint("hd95_mm IS NULL OR hd95_mm >= 0", name="hd95"),
        CheckConstraint("assd_mm IS NULL OR assd_mm >= 0", name="assd"),
    )

    id: Mapped[IntPK]
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    frame: Mapped[int]
    phase: Mapped[Phase] = mapped_column(_enum(Phase, "phase"))
    structure: Mapped[Structure] = mapped_column(_enum(Structure, "structure"))
    dice: Mapped[float | None]
    iou: Mapped[float | None]
    tp: Mapped[int]
    fp: Mapped[int]
    fn: Mapped[int]
    hd95_mm: Mapped[float | None]
    assd_mm: Mapped[float | None]
    vol_pred_ml: Mapped[float]
    vol_ref_ml: Mapped[float]


class CardiacIndex(Base):
    """Cardiac indices of a study from predicted (``pred``) or reference (``ref``) masks."""

    __tablename__ = "cardiac_indices"
    __table_args__ = (
        UniqueConstraint("study_id", "model_id", "source"),
        CheckConstraint("lv_edv_ml >= 0 AND lv_esv_ml >= 0 AND rv_edv_ml >= 0 AND rv_esv_ml >= 0", name="volumes"),
        CheckConstraint("myo_mass_g >= 0", name="mass"),
    )

    id: Mapped[IntPK]
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    source: Mapped[IndexSource] = mapped_column(_enum(IndexSource, "index_source"))
    ed_frame: Mapped[int]
    es_frame: Mapped[int]
    phase_source: Mapped[PhaseSource] = mapped_column(_enum(PhaseSource, "phase_source"))
    lv_edv_ml: Mapped[float]
    lv_esv_ml: Mapped[float]
    lv_sv_ml: Mapped[float]
    lv_ef_pct: Mapped[float | None]
    rv_edv_ml: Mapped[float]
    rv_esv_ml: Mapped[float]
    rv_sv_ml: Mapped[float]
    rv_ef_pct: Mapped[float | None]
    myo_mass_g: Mapped[float]
    bsa_m2: Mapped[Ml]
    lv_edv_index_ml_m2: Mapped[Ml]
    lv_esv_index_ml_m2: Mapped[Ml]
    rv_edv_index_ml_m2: Mapped[Ml]
    rv_esv_index_ml_m2: Mapped[Ml]
    myo_mass_index_g_m2: Mapped[Ml]
    lv_cardiac_output_l_min: Mapped[Ml]


class FrameQualityRow(Base):
    """What the segmenter measured of one structure's quality in one frame (:mod:`workers.quality`), and the
    Dice it predicts for the mask without a reference.

    Recorded with the masks; re-recording a frame replaces its rows.
    """

    __tablename__ = "frame_quality"
    __table_args__ = (
        UniqueConstraint("study_id", "model_id", "frame", "structure"),
        CheckConstraint("predicted_dice IS NULL OR (predicted_dice >= 0 AND predicted_dice <= 1)",
                        name="predicted_dice_range"),
        CheckConstraint("self_dice >= 0 AND self_dice <= 1", name="self_dice_range"),
        CheckConstraint("entropy IS NULL OR (entropy >= 0 AND entropy <= 1)", name="entropy_range"),
        CheckConstraint("fold_agreement IS NULL OR (fold_agreement >= 0 AND fold_agreement <= 1)",
                        name="fold_agreement_range"),
        CheckConstraint("n_folds >= 1", name="n_folds"),
        CheckConstraint("volume_ml >= 0", name="volume"),
    )

    id: Mapped[IntPK]
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    frame: Mapped[int]
    phase: Mapped[Phase] = mapped_column(_enum(Phase, "phase"))
    structure: Mapped[Structure] = mapped_column(_enum(Structure, "structure"))
    predicted_dice: Mapped[float | None]
    """The calibrated estimate of the mask's Dice against a reference (0 to 1); NULL when the model folder has no
    quality calibration."""
    self_dice: Mapped[float]
    """Each network's soft Dice against its own labels, averaged over the folds."""
    entropy: Mapped[float | None]
    """Mean normalised entropy over the voxels a network labels as the structure, averaged over the folds where
    it is defined; NULL when no fold labels a voxel of it."""
    fold_agreement: Mapped[float | None]
    """Mean Dice of each fold's labels against the ensemble's; NULL with one fold."""
    n_folds: Mapped[int]
    volume_ml: Mapped[float]
    """The structure's volume in the recorded mask."""


#: The longest QC flag name (``qc_flags.flag``).
FLAG_LENGTH = 32


class QualityFlag(Base):
    """One quality-control flag of a study's predicted masks (``workers.qc``): what looks wrong, where, how much.

    A study's flags for a model are replaced as a whole each time it is evaluated.
    """

    __tablename__ = "qc_flags"
    __table_args__ = (
        CheckConstraint("severity IN (1, 2)", name="severity"),
        Index("ix_qc_flags_study_id_model_id", "study_id", "model_id"),  # a study's flags of a model (0009)
    )

    id: Mapped[IntPK]
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    frame: Mapped[int | None]
    """The frame it concerns; NULL for a flag of the study (its cardiac indices)."""
    structure: Mapped[Structure | None] = mapped_column(_enum(Structure, "structure"))
    flag: Mapped[str] = mapped_column(String(FLAG_LENGTH))
    value: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    severity: Mapped[int]
    """1: a warning, 2: an error."""
    reason: Mapped[str] = mapped_column(Text)


class Worker(Base):
    """A Celery worker's heartbeat: what it is, what it runs, when it was last seen, the error it last met."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    """Celery's node name (``gpu0@host``)."""
    queue: Mapped[str] = mapped_column(String(32))
    device: Mapped[str | None] = mapped_column(String(64))
    """The device it segments on (``cuda:0 (NVIDIA H100)``, ``cpu``); NULL for a metrics worker."""
    model_fingerprint: Mapped[str | None] = mapped_column(String(64))
    """The model it has loaded (the last one), NULL before the first."""
    version: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(NAME_LENGTH))
    pid: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When it shut down cleanly; NULL while it runs (or when it died)."""
    last_error: Mapped[str | None] = mapped_column(Text)
    """The last error it met: its start that failed, a model that could not be loaded, a study's unexpected error."""
