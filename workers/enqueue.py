"""Send study ids to the gpu queue (messages carry ids only; the record holds the data).

Celery builds every message and its task-sent event (``app.amqp``), as ``app.send_task`` does; kombu's
producer batches then hand them to the broker in chunks over one connection. On Redis a chunk is one
pipeline (an ``LPUSH`` per message and a ``PUBLISH`` per event) instead of a round trip per command.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

from celery import Celery
from celery.events.dispatcher import EventDispatcher
from kombu import Producer
from kombu.common import maybe_declare
from kombu.utils.uuid import uuid

from workers.celery_app import CPU_QUEUE, EVALUATE_TASK, GPU_QUEUE, SEGMENT_TASK

log = logging.getLogger(__name__)

#: Messages handed to the broker at a time.
CHUNK = 500

#: How a message is retried when the broker does not answer: a few tries within about two seconds, then the
#: error is raised (the record keeps the study, and the reconciler sends it again later).
RETRY_POLICY: dict[str, Any] = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}


def enqueue_segmentation(app: Celery, study_ids: Sequence[int], on_sent: Callable[[int], None] | None = None,
                         chunk: int = CHUNK) -> int:
    """Send one segment task per study, in chunks over one broker connection; returns the number sent.

    Parameters
    ----------
    app
        The Celery app (its broker, serializer and task-sent event setting are used).
    study_ids
        The studies to segment, one message each, in this order.
    on_sent
        Called with the number of messages after each chunk is in the broker.
    chunk
        Messages per chunk.

    Raises
    ------
    kombu.exceptions.KombuError
        The broker failed while a chunk was being written (``BatchPublishError``: some of its messages
        may be queued). Chunks before it are queued. Submitting the run again (same ``--run``) enqueues
        every study of the run not yet done; one already queued is then sent twice, which the
        idempotent tasks allow.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 message, got {chunk}")
    options = app.amqp.router.route({"queue": GPU_QUEUE}, SEGMENT_TASK, (), None, None)
    with app.producer_or_acquire() as producer:
        maybe_declare(options["queue"], producer.channel, retry=True, **RETRY_POLICY)  # once, not per message
        events = _event_dispatcher(app, producer)
        for start in range(0, len(study_ids), chunk):
            part = study_ids[start : start + chunk]
            # Two broker commands per message at most (the push and its event), so a chunk is one flush.
            with producer.batch(max_size=2 * len(part)):
                for study_id in part:
                    _send(app, producer, study_id, options, events)
            log.debug("enqueued %d of %d studies", start + len(part), len(study_ids))
            if on_sent is not None:
                on_sent(len(part))
    return len(study_ids)


def enqueue_evaluation(app: Celery, study_ids: Sequence[int]) -> int:
    """Send one evaluate task per segmented study to the cpu queue; returns the number sent.

    Raises
    ------
    kombu.exceptions.OperationalError
        The broker did not answer within :data:`RETRY_POLICY`.
    """
    for study_id in study_ids:
        app.send_task(EVALUATE_TASK, args=[study_id], queue=CPU_QUEUE, retry=True, retry_policy=RETRY_POLICY)
    return len(study_ids)


def queue_lengths(app: Celery, queues: Sequence[str]) -> dict[str, int]:
    """How many messages wait in each of ``queues`` (declared if missing), over one broker connection; those a
    worker has reserved are not counted.

    Raises
    ------
    kombu.exceptions.OperationalError
        The broker did not answer.
    """
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=RETRY_POLICY["max_retries"])
        channel: Any = connection.default_channel  # kombu's virtual channels (Redis, filesystem) count messages
        return {queue: int(channel.queue_declare(queue=queue).message_count) for queue in queues}


def _event_dispatcher(app: Celery, producer: Producer) -> EventDispatcher:
    """The dispatcher of the task-sent events, as ``app.amqp`` makes its own, but with its exchange bound to the
    producer's channel and declared once: Celery's is unbound, so each event would bind a copy of it first."""
    events: Any = app.events.Dispatcher(enabled=False)  # its exchange is not in celery-types' stubs
    channel: Any = producer.channel
    events.exchange = events.exchange.bind(channel)
    maybe_declare(events.exchange, channel, retry=True, **RETRY_POLICY)
    return cast(EventDispatcher, events)


def _send(app: Celery, producer: Producer, study_id: int, options: dict[str, object],
          events: EventDispatcher | None = None) -> None:
    """Build and publish one segment task message the way ``app.send_task`` does, without re-routing it.
    ``argsrepr`` and ``kwargsrepr`` are the ``saferepr`` Celery would write of ``[study_id]`` and ``{}``."""
    message = app.amqp.create_task_message(uuid(), SEGMENT_TASK, [study_id], None, reply_to=app.thread_oid,
                                           create_sent_event=app.conf.task_send_sent_event, ignore_result=None,
                                           argsrepr=f"[{int(study_id)}]", kwargsrepr="{}")
    # The queue is declared before the batch. Inside a batch publishing only buffers, so broker errors
    # come at the flush, which kombu does not retry; a retry here would have nothing to resend.
    app.amqp.send_task_message(producer, SEGMENT_TASK, message, declare=[], retry=False, event_dispatcher=events,
                               **options)
