"""Send study ids to the gpu queue (messages carry ids only; the record holds the data)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from celery import Celery

from workers.celery_app import GPU_QUEUE, SEGMENT_TASK


def enqueue_segmentation(app: Celery, study_ids: Sequence[int], on_sent: Callable[[], None] | None = None) -> int:
    """Send one segment task per study over one broker connection; returns the number sent."""
    with app.producer_or_acquire() as producer:
        for study_id in study_ids:
            app.send_task(SEGMENT_TASK, args=[study_id], queue=GPU_QUEUE, producer=producer)
            if on_sent is not None:
                on_sent()
    return len(study_ids)
