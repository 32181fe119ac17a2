"""A study's life in the record: queued -> running (leased) -> segmented -> done | failed.

Every transition is one conditional UPDATE, so two workers can never both claim a study:
the database decides, atomically, who got it. Besides ``error`` (why it failed), a study keeps
``warnings``: what its segmentation could not write besides the masks, one line each, cleared
when it is claimed again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Result, func, or_, select, update
from sqlalchemy.orm import Session

from db.schema import Run, Study
from heartseg.enums import PhaseSource, StudyStatus


def _changed_one(result: Result[Any]) -> bool:
    """Whether an UPDATE changed exactly one row (an UPDATE's result is a ``CursorResult``)."""
    return cast("CursorResult[Any]", result).rowcount == 1


def now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def claim_study(session: Session, study_id: int, worker: str, lease_s: float) -> bool:
    """Take a queued study, or a running one whose lease expired; False if someone else holds it or it is finished."""
    moment = now()
    result = session.execute(
        update(Study)
        .where(Study.id == study_id)
        .where(or_(Study.status == StudyStatus.QUEUED,
                   (Study.status == StudyStatus.RUNNING) & (Study.lease_expires_at < moment)))
        .values(status=StudyStatus.RUNNING, worker=worker, attempts=Study.attempts + 1, started_at=moment,
                lease_expires_at=moment + timedelta(seconds=lease_s), error=None, warnings=None)
        .execution_options(synchronize_session=False)
    )
    return _changed_one(result)


def renew_lease(session: Session, study_id: int, worker: str, lease_s: float) -> bool:
    """Extend the lease of a study this worker holds."""
    result = session.execute(
        update(Study)
        .where(Study.id == study_id, Study.worker == worker, Study.status == StudyStatus.RUNNING)
        .values(lease_expires_at=now() + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    return _changed_one(result)


def record_segmentation(session: Session, study_id: int, *, ed: int | None, es: int | None,
                        phase_source: PhaseSource | None, load_s: float, predict_s: float, write_s: float) -> None:
    """Masks are written: record the frames used and the timings (the status is left as it is)."""
    session.execute(
        update(Study).where(Study.id == study_id)
        .values(segmented_at=now(), ed_frame=ed, es_frame=es, phase_source=phase_source, load_s=load_s,
                predict_s=predict_s, write_s=write_s)
        .execution_options(synchronize_session=False)
    )


def add_warning(session: Session, study_id: int, warning: str) -> None:
    """Append one line to the study's ``warnings`` (its line breaks become spaces; at most 1000 characters)."""
    line = " ".join(warning.split())[:1000]
    session.execute(
        update(Study).where(Study.id == study_id)
        .values(warnings=func.coalesce(Study.warnings + "\n", "") + line)
        .execution_options(synchronize_session=False)
    )


def record_patient(session: Session, study_id: int, *, patient_id: str, group: str | None,
                   height_cm: float | None, weight_kg: float | None, n_frames: int) -> None:
    """What loading the study told of the patient (the name is the pseudonym when one is configured)."""
    session.execute(
        update(Study).where(Study.id == study_id)
        .values(patient_id=patient_id, pathology_group=group, height_cm=height_cm, weight_kg=weight_kg,
                n_frames=n_frames)
        .execution_options(synchronize_session=False)
    )


def mark_segmented(session: Session, study_id: int) -> None:
    """running -> segmented, only if the study is still running (its evaluation may already have finished it)."""
    session.execute(
        update(Study).where(Study.id == study_id, Study.status == StudyStatus.RUNNING)
        .values(status=StudyStatus.SEGMENTED, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def mark_done(session: Session, study_id: int, *, metrics_s: float) -> None:
    """Metrics and indices are recorded: the study is done."""
    session.execute(
        update(Study).where(Study.id == study_id)
        .values(status=StudyStatus.DONE, finished_at=now(), metrics_s=metrics_s, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def mark_failed(session: Session, study_id: int, error: str) -> None:
    """Bad input: record why; the study is not retried."""
    session.execute(
        update(Study).where(Study.id == study_id)
        .values(status=StudyStatus.FAILED, error=error[:4000], finished_at=now(), lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def study_with_run(session: Session, study_id: int) -> tuple[Study, Run]:
    """A study and its run."""
    return session.execute(select(Study, Run).join(Run, Run.id == Study.run_id).where(Study.id == study_id)).one()


def requeue_expired(session: Session, run_id: int | None = None) -> list[int]:
    """Put running studies whose lease expired (their worker died) back to queued; returns their ids."""
    query = select(Study.id).where(Study.status == StudyStatus.RUNNING, Study.lease_expires_at < now())
    if run_id is not None:
        query = query.where(Study.run_id == run_id)
    ids = list(session.execute(query).scalars())
    if ids:
        session.execute(
            update(Study).where(Study.id.in_(ids), Study.status == StudyStatus.RUNNING,
                                Study.lease_expires_at < now())
            .values(status=StudyStatus.QUEUED, worker=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
    return ids


def requeue_failed(session: Session, run_id: int) -> list[int]:
    """Put a run's failed studies back to queued (``heartseg retry --failed``); returns their ids."""
    ids = list(session.execute(select(Study.id).where(Study.run_id == run_id,
                                                      Study.status == StudyStatus.FAILED)).scalars())
    if ids:
        session.execute(update(Study).where(Study.id.in_(ids)).values(status=StudyStatus.QUEUED, error=None)
                        .execution_options(synchronize_session=False))
    return ids
