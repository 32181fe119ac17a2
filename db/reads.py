"""What the stages and the scheduler read from the record, one function per question."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.schema import FrameQualityRow, Mask, Model, Run, Study, Worker
from heartseg.labels import Structure


def study_masks(session: Session, study_id: int, model_id: int) -> list[tuple[int, str, float | None]]:
    """``(frame, uri, uncertainty)`` of the masks a model made of a study, by frame (uncertainty None where the
    segmenter gave none)."""
    rows = session.execute(select(Mask.frame, Mask.uri, Mask.uncertainty)
                           .where(Mask.study_id == study_id, Mask.model_id == model_id).order_by(Mask.frame))
    return [(frame, uri, uncertainty) for frame, uri, uncertainty in rows]


def study_predicted_dice(session: Session, study_id: int, model_id: int) -> dict[int, dict[Structure, float | None]]:
    """``{frame: {structure: predicted Dice}}`` that a model's segmentation of a study recorded in
    ``frame_quality`` (None where it has no calibration); frames without rows are absent."""
    rows = session.execute(select(FrameQualityRow.frame, FrameQualityRow.structure, FrameQualityRow.predicted_dice)
                           .where(FrameQualityRow.study_id == study_id, FrameQualityRow.model_id == model_id)
                           .order_by(FrameQualityRow.frame))
    predicted: dict[int, dict[Structure, float | None]] = {}
    for frame, structure, dice in rows:
        predicted.setdefault(frame, {})[structure] = dice
    return predicted


def model_path_and_run(session: Session, study_id: int) -> tuple[str, str]:
    """The model folder a study's run uses, and the run's name."""
    path, run = session.execute(
        select(Model.path, Run.name).join(Run, Run.model_id == Model.id).join(Study, Study.run_id == Run.id)
        .where(Study.id == study_id)
    ).one()
    return path, run


def run_name_of(session: Session, study_id: int) -> str:
    """The name of the run a study belongs to."""
    return session.execute(select(Run.name).join(Study, Study.run_id == Run.id)
                           .where(Study.id == study_id)).scalar_one()


def status_counts(session: Session, run: str) -> dict[str, int]:
    """Studies of run ``run`` per status (only the statuses that occur)."""
    rows = session.execute(select(Study.status, func.count()).join(Run, Run.id == Study.run_id)
                           .where(Run.name == run).group_by(Study.status)).all()
    return {str(status): count for status, count in rows}


def recent_workers(session: Session, seen_within_s: float) -> list[Worker]:
    """The workers seen within ``seen_within_s`` seconds (one whose start failed wrote one beat, with the reason as
    ``last_error``), by queue and name; a worker that stopped cleanly is left out."""
    since = datetime.now(UTC) - timedelta(seconds=seen_within_s)
    return list(session.execute(select(Worker).where(Worker.last_seen_at >= since, Worker.stopped_at.is_(None))
                                .order_by(Worker.queue, Worker.name)).scalars())
