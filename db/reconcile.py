"""The record heals itself: the reconciler's questions and updates, one transaction per pass.

A pass re-queues studies whose lease expired (their worker died or hung), fails those that had
``max_attempts`` tries, and picks the studies whose message was lost: ``queued`` or ``segmented``
studies whose message was sent ``stall_s`` ago while no study made progress in that queue for as
long (no claim for the segmentation queue, no finished study for the evaluation queue). The caller
sends their messages before the transaction commits, so a broker that is down leaves the record as
it was, to be tried again at the next pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from db.lifecycle import id_chunks, now, requeue_expired
from db.schema import Study
from heartseg.enums import StudyStatus

#: The PostgreSQL advisory lock that lets one reconciler pass run at a time, whoever runs it.
RECONCILER_LOCK = 0x4853_5243  # "HSRC"


@dataclass
class Reconciliation:
    """What one pass changed: studies to segment again, to evaluate again, and those it failed."""

    segment: list[int] = field(default_factory=list)
    """Queued again after their lease expired, or queued with their message lost."""
    evaluate: list[int] = field(default_factory=list)
    """Segmented with their evaluation message lost."""
    failed: list[int] = field(default_factory=list)
    """Lost their worker after the last allowed try."""
    requeued: list[int] = field(default_factory=list)
    """The part of ``segment`` whose lease expired."""

    def __bool__(self) -> bool:
        return bool(self.segment or self.evaluate or self.failed)


def try_reconciler_lock(session: Session) -> bool:
    """Take the reconciler's lock for this transaction (PostgreSQL); False when another pass holds it.

    SQLite needs none: its first write takes the database's only write lock.
    """
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": RECONCILER_LOCK}).scalar())


def reconcile_record(session: Session, *, max_attempts: int, stall_s: float, run_id: int | None = None,
                     queues_idle: tuple[bool, bool] = (True, True)) -> Reconciliation:
    """One pass over the record (see the module); ``queues_idle`` says whether the (segmentation, evaluation)
    queues hold no message, since only then can a stalled study's message be lost."""
    requeued, failed = requeue_expired(session, run_id, max_attempts=max_attempts)
    result = Reconciliation(segment=list(requeued), failed=failed, requeued=list(requeued))
    if queues_idle[0]:
        result.segment += stalled(session, StudyStatus.QUEUED, stall_s, run_id, exclude=requeued)
    if queues_idle[1]:
        result.evaluate = stalled(session, StudyStatus.SEGMENTED, stall_s, run_id)
    return result


def stalled(session: Session, status: StudyStatus, stall_s: float, run_id: int | None = None,
            exclude: list[int] | None = None) -> list[int]:
    """Studies in ``status`` (queued or segmented) whose message was sent over ``stall_s`` ago while none made
    progress in its queue for as long; their ``enqueued_at`` is set to now (the caller sends them)."""
    moment = now()
    since = moment - timedelta(seconds=stall_s)
    progress = Study.started_at if status is StudyStatus.QUEUED else Study.finished_at
    if session.execute(select(Study.id).where(progress > since).limit(1)).first() is not None:
        return []
    query = select(Study.id).where(Study.status == status, func.coalesce(Study.enqueued_at, Study.queued_at) < since)
    if run_id is not None:
        query = query.where(Study.run_id == run_id)
    excluded = set(exclude or ())
    ids = [i for i in session.execute(query.order_by(Study.id)).scalars() if i not in excluded]
    for part in id_chunks(ids):
        session.execute(update(Study).where(Study.id.in_(part), Study.status == status).values(enqueued_at=moment)
                        .execution_options(synchronize_session=False))
    return ids
