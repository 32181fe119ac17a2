"""A study's life in the record: queued -> running (leased) -> segmented -> done | failed.

Every transition is one conditional UPDATE, so two workers can never both claim a study:
the database decides, atomically, who got it. Besides ``error`` (why it failed), a study keeps
``warnings``: what its segmentation could not write besides the masks, one line each, cleared
when it is claimed again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Result, func, or_, select, update
from sqlalchemy.orm import Session

from db.schema import Run, Study
from heartseg.enums import PhaseSource, StudyStatus

#: The most ids one ``IN (...)`` list carries: a statement takes at most 65,535 parameters on PostgreSQL and
#: 32,766 on SQLite, and a run can hold more studies than either.
IN_CHUNK = 10_000


def id_chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    """``ids`` in pieces of at most :data:`IN_CHUNK`, one ``IN`` list each."""
    for start in range(0, len(ids), IN_CHUNK):
        yield ids[start:start + IN_CHUNK]


def _changed_one(result: Result[Any]) -> bool:
    """Whether an UPDATE changed exactly one row (an UPDATE's result is a ``CursorResult``)."""
    return cast("CursorResult[Any]", result).rowcount == 1


def now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def claim_study(session: Session, study_id: int, worker: str, lease_s: float, max_attempts: int | None = None) -> bool:
    """Take a queued study, or a running one whose lease expired; False if someone else holds it or it is finished.

    A study whose lease expired after ``max_attempts`` tries is not taken: the reconciler fails it. The
    study's ``error`` (the last try's, if any) stays until it is done.
    """
    moment = now()
    expired = (Study.status == StudyStatus.RUNNING) & (Study.lease_expires_at < moment)
    if max_attempts is not None:
        expired = expired & (Study.attempts < max_attempts)
    result = session.execute(
        update(Study)
        .where(Study.id == study_id)
        .where(or_(Study.status == StudyStatus.QUEUED, expired))
        .values(status=StudyStatus.RUNNING, worker=worker, attempts=Study.attempts + 1, started_at=moment,
                lease_expires_at=moment + timedelta(seconds=lease_s), warnings=None)
        .execution_options(synchronize_session=False)
    )
    return _changed_one(result)


def release_claim(session: Session, study_id: int, worker: str) -> bool:
    """Give back a study this worker holds without counting the try (a transient error: it will be tried again)."""
    result = session.execute(
        update(Study)
        .where(Study.id == study_id, Study.worker == worker, Study.status == StudyStatus.RUNNING)
        .values(status=StudyStatus.QUEUED, worker=None, lease_expires_at=None, enqueued_at=now(),
                attempts=Study.attempts - 1)  # the claim counted it
        .execution_options(synchronize_session=False)
    )
    return _changed_one(result)


def record_failed_try(session: Session, study_id: int, worker: str, reason: str,
                      max_attempts: int) -> StudyStatus | None:
    """A try of a study this worker holds ended in an unexpected error: ``queued`` again with the reason as its
    ``error``, or ``failed`` with it after ``max_attempts`` tries; None when the worker no longer holds it."""
    study = session.execute(select(Study.attempts).where(Study.id == study_id, Study.worker == worker,
                                                         Study.status == StudyStatus.RUNNING)).first()
    if study is None:
        return None
    status = StudyStatus.FAILED if study.attempts >= max_attempts else StudyStatus.QUEUED
    values: dict[str, Any] = {"status": status, "worker": None, "lease_expires_at": None}
    if status is StudyStatus.FAILED:
        values.update(error=_after_tries(reason, study.attempts), finished_at=now())
    else:
        values.update(error=reason[:4000], enqueued_at=now())
    result = session.execute(update(Study).where(Study.id == study_id, Study.worker == worker,
                                                 Study.status == StudyStatus.RUNNING)
                             .values(**values).execution_options(synchronize_session=False))
    return status if _changed_one(result) else None


def record_failed_evaluation(session: Session, study_id: int, reason: str, max_attempts: int) -> StudyStatus | None:
    """An evaluation of a segmented study ended in an unexpected error: one more try counted; ``segmented`` (to be
    evaluated again) with the reason as its ``error``, or ``failed`` after ``max_attempts`` tries; None when the
    study is no longer segmented."""
    study = session.execute(select(Study.attempts).where(Study.id == study_id,
                                                         Study.status == StudyStatus.SEGMENTED)).first()
    if study is None:
        return None
    tries = study.attempts + 1
    status = StudyStatus.FAILED if tries >= max_attempts else StudyStatus.SEGMENTED
    values: dict[str, Any] = {"status": status, "attempts": tries}
    if status is StudyStatus.FAILED:
        values.update(error=_after_tries(reason, tries), finished_at=now())
    else:
        values.update(error=reason[:4000], enqueued_at=now())
    result = session.execute(update(Study).where(Study.id == study_id, Study.status == StudyStatus.SEGMENTED)
                             .values(**values).execution_options(synchronize_session=False))
    return status if _changed_one(result) else None


def _after_tries(reason: str, tries: int) -> str:
    """The ``error`` of a study failed after ``tries`` tries: the last reason, and how many tries."""
    return f"{reason[:3900]} (after {tries} {'try' if tries == 1 else 'tries'})"


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


def mark_segmented(session: Session, study_id: int, worker: str | None = None) -> None:
    """running -> segmented, only if the study is still running (its evaluation may already have finished it),
    under ``worker``'s claim when given; its evaluation message was just sent (``enqueued_at``)."""
    query = update(Study).where(Study.id == study_id, Study.status == StudyStatus.RUNNING)
    if worker is not None:
        query = query.where(Study.worker == worker)
    session.execute(query.values(status=StudyStatus.SEGMENTED, lease_expires_at=None, enqueued_at=now())
                    .execution_options(synchronize_session=False))


def mark_done(session: Session, study_id: int, *, metrics_s: float) -> None:
    """Metrics and indices are recorded: the study is done."""
    session.execute(
        update(Study).where(Study.id == study_id)
        .values(status=StudyStatus.DONE, finished_at=now(), metrics_s=metrics_s, lease_expires_at=None, error=None)
        .execution_options(synchronize_session=False)
    )


def mark_failed(session: Session, study_id: int, error: str, worker: str | None = None) -> None:
    """Bad input: record why; the study is not retried. With ``worker``, only while that worker holds it."""
    query = update(Study).where(Study.id == study_id)
    if worker is not None:
        query = query.where(Study.worker == worker, Study.status == StudyStatus.RUNNING)
    session.execute(
        query
        .values(status=StudyStatus.FAILED, error=error[:4000], finished_at=now(), lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def study_with_run(session: Session, study_id: int) -> tuple[Study, Run]:
    """A study and its run."""
    return session.execute(select(Study, Run).join(Run, Run.id == Study.run_id).where(Study.id == study_id)).one()


def requeue_expired(session: Session, run_id: int | None = None,
                    max_attempts: int | None = None) -> tuple[list[int], list[int]]:
    """Running studies whose lease expired (their worker died or hung): back to ``queued``, or ``failed`` once
    they had ``max_attempts`` tries; returns the ids of both (requeued, failed)."""
    moment = now()
    query = select(Study.id, Study.attempts, Study.worker, Study.error).where(
        Study.status == StudyStatus.RUNNING, Study.lease_expires_at < moment)
    if run_id is not None:
        query = query.where(Study.run_id == run_id)
    requeued: list[int] = []
    failed: list[int] = []
    for row in session.execute(query).all():
        exhausted = max_attempts is not None and row.attempts >= max_attempts
        values: dict[str, Any] = {"worker": None, "lease_expires_at": None}
        if exhausted:
            last = f"; the try before: {row.error}" if row.error else ""
            values.update(status=StudyStatus.FAILED, finished_at=moment,
                          error=_after_tries(f"WorkerLost: worker {row.worker} stopped renewing its lease "
                                             f"(it died, hung or lost the record){last}", row.attempts))
        else:
            values.update(status=StudyStatus.QUEUED, enqueued_at=moment,
                          error=f"WorkerLost: worker {row.worker} stopped renewing its lease")
        result = session.execute(update(Study).where(Study.id == row.id, Study.status == StudyStatus.RUNNING,
                                                     Study.lease_expires_at < moment)
                                 .values(**values).execution_options(synchronize_session=False))
        if _changed_one(result):
            (failed if exhausted else requeued).append(row.id)
    return requeued, failed


def requeue_failed(session: Session, run_id: int) -> list[int]:
    """Put a run's failed studies back to queued (``heartseg retry --failed``); returns their ids."""
    return requeue_finished(session, run_id, (StudyStatus.FAILED,))


def requeue_finished(session: Session, run_id: int, statuses: tuple[StudyStatus, ...],
                     study_ids: list[int] | None = None) -> list[int]:
    """Put a run's studies in ``statuses`` (done, failed) back to queued with their tries reset (of ``study_ids``
    only, when given); returns their ids. Their rows of masks, metrics and indices are replaced as they are redone."""
    query = select(Study.id).where(Study.run_id == run_id, Study.status.in_(statuses))
    ids = list(session.execute(query.order_by(Study.id)).scalars())
    if study_ids is not None:  # filtered here: a run's ids can be more than one statement's parameters
        wanted = set(study_ids)
        ids = [i for i in ids if i in wanted]
    for part in id_chunks(ids):
        session.execute(update(Study).where(Study.id.in_(part), Study.status.in_(statuses))
                        .values(status=StudyStatus.QUEUED, error=None, attempts=0, enqueued_at=now(), worker=None)
                        .execution_options(synchronize_session=False))
    return ids
