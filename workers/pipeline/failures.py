"""What a stage records when a study fails: bad input, an unexpected error, or a transient one.

* Bad input (a :class:`~heartseg.errors.HeartSegError`, or a model that cannot be loaded) fails the
  study with the reason, without retry (:func:`record_failure`, :func:`refuse_study`).
* An unexpected error is a failed try, counted against the study's tries (:func:`failed_try`,
  raised as :class:`FailedTryError`).
* After a transient error the study is given back uncounted (:func:`give_back`), for the task to retry.
"""

from __future__ import annotations

import logging
import time

from db.lifecycle import (
    claim_study,
    mark_failed,
    record_failed_evaluation,
    record_failed_try,
    release_claim,
    study_with_run,
)
from db.session import session_scope
from heartseg.enums import StudyStatus
from heartseg.errors import HeartSegError
from workers.monitoring import count_study
from workers.stage_context import StageContext

logger = logging.getLogger(__name__)


class FailedTryError(Exception):
    """A try of a study ended in an unexpected error, recorded against it (``error``, one try counted).

    ``status`` is what the record made of the study: ``queued`` or ``segmented`` (its stage's message
    is to be sent again), ``failed`` (out of tries), or None (another worker holds it now).
    """

    def __init__(self, study_id: int, status: StudyStatus | None, reason: str) -> None:
        super().__init__(f"study {study_id}: {reason}")
        self.study_id, self.status, self.reason = study_id, status, reason


def give_back(ctx: StageContext, study_id: int, worker: str) -> None:
    """After a transient error: give the study back uncounted, trying for as long as the lease lasts (the record
    may be what is away); when that fails, the lease expires and the reconciler re-queues the study (a try)."""
    deadline = time.monotonic() + ctx.settings.lease_s
    while True:
        try:
            with session_scope(ctx.engine) as session:
                release_claim(session, study_id, worker)
            return
        except Exception as exc:
            if time.monotonic() + 1.0 > deadline:
                logger.warning("study %s: could not give the study back (%s); its lease will expire", study_id, exc)
                return
            time.sleep(1.0)


def failed_try(ctx: StageContext, study_id: int, run_name: str, exc: Exception, *,
               worker: str | None = None) -> FailedTryError:
    """Record an unexpected error as a failed try of the study (its traceback in the log) and say what became of it:
    the segmentation's try when ``worker`` holds the study, else the evaluation's."""
    reason = error_line(exc)
    logger.error("study %s: unexpected error (%s)", study_id, reason, exc_info=exc)
    limit = ctx.settings.max_attempts
    try:
        with session_scope(ctx.engine) as session:
            status = (record_failed_try(session, study_id, worker, reason, limit) if worker is not None
                      else record_failed_evaluation(session, study_id, reason, limit))
    except Exception:
        logger.warning("study %s: could not record the failed try", study_id, exc_info=True)
        status = None
    if status is StudyStatus.FAILED:
        count_study(run_name, StudyStatus.FAILED)
        logger.warning("study %s failed after its last try: %s", study_id, reason)
    return FailedTryError(study_id, status, reason)


def refuse_study(ctx: StageContext, study_id: int, exc: HeartSegError, *, worker: str) -> bool:
    """Fail a study that cannot be segmented at all (its model cannot be loaded), if it is still to be done:
    claimed like any study first, so one that is held elsewhere or finished is left alone (False)."""
    with session_scope(ctx.engine) as session:
        if not claim_study(session, study_id, worker, ctx.settings.lease_s):
            return False
        _, run = study_with_run(session, study_id)
        run_name = run.name
    record_failure(ctx, study_id, run_name, exc, worker=worker)
    return True


def record_failure(ctx: StageContext, study_id: int, run_name: str, exc: HeartSegError, stage: str = "segment",
                   worker: str | None = None) -> bool:
    """Record bad input (or a model that cannot be loaded) against the study: no retry; False: nothing follows.
    With ``worker``, only while that worker holds the study."""
    with session_scope(ctx.engine) as session:
        mark_failed(session, study_id, str(exc), worker=worker)
    count_study(run_name, StudyStatus.FAILED)
    logger.warning("study %s failed in %s: %s", study_id, stage, exc)
    return False


def error_line(exc: BaseException) -> str:
    """An exception as one line of a warning: its type and message."""
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"[:1000]
