"""The reconciler: heals the record so a run finishes with nobody watching.

Every worker runs :func:`reconcile_forever` on a timer (``HEARTSEG_RECONCILE_S``), and so may a
``heartseg reconcile --loop`` process (one replica in a cluster whose workers scale to zero); a
PostgreSQL advisory lock lets one pass run at a time. A pass (:func:`db.reconcile.reconcile_record`)
re-queues studies whose lease expired and fails those out of tries, then sends again the messages of
studies that made no progress while their queue was empty (a broker that lost its messages). Sending a
message twice is harmless: every claim is a conditional update of the record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from celery import Celery
from sqlalchemy import Engine

from db.reconcile import Reconciliation, reconcile_record, try_reconciler_lock
from db.session import session_scope
from heartseg.settings import Settings
from workers.celery_app import CPU_QUEUE, GPU_QUEUE
from workers.enqueue import enqueue_evaluation, enqueue_segmentation, queue_lengths

logger = logging.getLogger(__name__)


def reconcile_once(engine: Engine, settings: Settings, app: Celery, run_id: int | None = None) -> Reconciliation:
    """One pass (of run ``run_id``, or every run): update the record and send the messages, in one transaction
    that the broker's failure rolls back.

    Raises
    ------
    sqlalchemy.exc.OperationalError, kombu.exceptions.OperationalError
        The record or the broker could not be reached; nothing was changed.
    """
    waiting = queue_lengths(app, (GPU_QUEUE, CPU_QUEUE))
    idle = (waiting[GPU_QUEUE] == 0, waiting[CPU_QUEUE] == 0)
    with session_scope(engine) as session:
        if not try_reconciler_lock(session):
            return Reconciliation()
        result = reconcile_record(session, max_attempts=settings.max_attempts, stall_s=settings.stall_s,
                                  run_id=run_id, queues_idle=idle)
        enqueue_segmentation(app, result.segment)
        enqueue_evaluation(app, result.evaluate)
    if result:
        logger.info("reconciler: %d lease(s) expired, re-queued %s; failed after their last try %s; "
                    "segment messages sent again %s; evaluation messages sent again %s", len(result.requeued),
                    result.requeued, result.failed, sorted(set(result.segment) - set(result.requeued)),
                    result.evaluate)
    return result


def reconcile_forever(engine: Engine, settings: Settings, app: Celery, stop: threading.Event,
                      every_s: float | None = None, after_pass: Callable[[str | None], None] | None = None) -> None:
    """Run a pass every ``every_s`` seconds (``HEARTSEG_RECONCILE_S``) until ``stop`` is set; a pass that fails
    (the record or broker unreachable) is logged and tried again at the next tick. ``after_pass`` gets the
    failed pass's error (None after a good one): ``heartseg reconcile --loop`` writes its heartbeat with it."""
    interval = settings.reconcile_s if every_s is None else every_s
    while not stop.wait(interval):
        error = None
        try:
            reconcile_once(engine, settings, app)
        except Exception as exc:  # the record or broker is away: the next tick tries again
            error = f"reconciler pass failed: {type(exc).__name__}: {exc}"
            logger.warning("%s; next try in %.0f s", error, interval)
        if after_pass is not None:
            try:
                after_pass(error)
            except Exception as exc:
                logger.warning("could not write the reconciler's heartbeat: %s", exc)
