"""Follow a run in the record (``heartseg status``), re-enqueueing studies whose worker died."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from db.lifecycle import requeue_expired
from db.queries import require_run
from db.reads import status_counts
from db.session import open_record, session_scope
from heartseg.enums import StudyStatus
from heartseg.settings import Settings
from scheduler.enqueue import enqueue_segmentation
from workers.celery_app import create_app

FINISHED = (StudyStatus.DONE, StudyStatus.FAILED)


def follow_run(settings: Settings, run: str, *, wait: bool, poll_s: float, console: Console) -> dict[str, int]:
    """Show the run's progress (once, or until it finishes with ``wait``); returns the final counts."""
    engine = open_record(settings.database_url)
    run_id = require_run(engine, run)
    celery = create_app(settings)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), TimeRemainingColumn())
    started, first_done = time.monotonic(), None
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(run, total=1, detail="")
        while True:
            with session_scope(engine) as session:
                expired = requeue_expired(session, run_id)
            enqueue_segmentation(celery, expired)
            with session_scope(engine) as session:
                counts = status_counts(session, run)
            total = sum(counts.values())
            finished = sum(counts.get(s, 0) for s in FINISHED)
            first_done = first_done if first_done is not None else (finished, time.monotonic())
            minutes = max((time.monotonic() - started) / 60, 1e-9)
            rate = (finished - first_done[0]) / minutes
            running = counts.get("running", 0) + counts.get("segmented", 0)
            detail = (f"done {counts.get('done', 0)} failed {counts.get('failed', 0)} running {running} "
                      f"queued {counts.get('queued', 0)} | {rate:.1f} studies/min")
            progress.update(bar, total=max(total, 1), completed=finished, detail=detail)
            if not wait or finished >= total:
                return counts
            time.sleep(poll_s)
