"""Follow a run in the record (``heartseg status``): its progress, the live workers, the record's outages.

Every ``HEARTSEG_RECONCILE_S`` it also runs a reconciler pass (:mod:`workers.reconciler`), as every
worker does on its own:
a run finishes without anyone following it, and following it changes nothing but how soon a lost
study is seen. A record or broker that does not answer is shown as one line and tried again; after
``unreachable_s`` without an answer, :class:`RecordUnreachableError` is raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from sqlalchemy import Engine

from db.queries import require_run
from db.reads import recent_workers, status_counts
from db.schema import Worker
from db.session import open_record, session_scope
from heartseg.enums import StudyStatus
from heartseg.errors import HeartSegError
from heartseg.settings import Settings
from workers.celery_app import CPU_QUEUE, GPU_QUEUE, create_app
from workers.reconciler import reconcile_once
from workers.transient import TRANSIENT

logger = logging.getLogger(__name__)

T = TypeVar("T")

FINISHED = (StudyStatus.DONE, StudyStatus.FAILED)
#: A worker counts as live when its last beat is at most this many beats old.
LIVE_BEATS = 3


class RecordUnreachableError(HeartSegError):
    """The record did not answer for longer than the caller would wait."""


@dataclass(frozen=True)
class WorkersView:
    """The workers the record has seen lately, and what is wrong with them (one line each)."""

    summary: str
    problems: tuple[str, ...]


def workers_view(workers: list[Worker], counts: dict[str, int], starting: bool = False) -> WorkersView:
    """Live workers per queue, and the problems worth a red line: a queue with studies waiting and no worker
    (unless the workers are still ``starting``), a worker whose start failed or that met an error."""
    per_queue: dict[str, list[Worker]] = {GPU_QUEUE: [], CPU_QUEUE: []}
    problems = []
    for worker in workers:
        failed_start = (worker.last_error or "").startswith("start failed")
        for queue in worker.queue.split(","):
            if not failed_start:
                per_queue.setdefault(queue, []).append(worker)
        if worker.last_error:
            problems.append(f"worker {worker.name}: {worker.last_error}")
    waiting = {GPU_QUEUE: counts.get(StudyStatus.QUEUED, 0) + counts.get(StudyStatus.RUNNING, 0),
               CPU_QUEUE: counts.get(StudyStatus.SEGMENTED, 0)}
    for queue, n in waiting.items():
        if n and not per_queue.get(queue) and not starting:
            problems.append(f"no live worker on queue {queue} ({n} studies wait for one)")
    parts = []
    for queue, members in per_queue.items():
        described = ", ".join(f"{w.name}" + (f" on {w.device}" if w.device else "")
                              + (f" model {w.model_fingerprint[:8]}" if w.model_fingerprint else "") for w in members)
        parts.append(f"{queue} {len(members)}" + (f" ({described})" if described else ""))
    return WorkersView("workers: " + "; ".join(parts), tuple(problems))


def follow_run(settings: Settings, run: str, *, wait: bool, poll_s: float, console: Console,
               unreachable_s: float = 600.0, check: Callable[[], None] | None = None,
               starting_s: float = 0.0) -> dict[str, int]:
    """Show the run's progress (once, or until it finishes with ``wait``); returns the final counts.

    ``check`` is called at every look (``heartseg run`` checks its workers are alive; it raises to stop).
    For the first ``starting_s`` seconds a queue without a live worker is not called a problem (the
    workers of ``heartseg run`` are starting).

    Raises
    ------
    RecordUnreachableError
        When the record did not answer for ``unreachable_s`` seconds.
    """
    engine = _reach(lambda: open_record(settings.database_url), console, unreachable_s)
    run_id = _reach(lambda: require_run(engine, run), console, unreachable_s)
    celery = create_app(settings)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), TimeRemainingColumn())
    started, first_done = time.monotonic(), None
    next_pass = started
    shown: tuple[str, tuple[str, ...]] | None = None
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(run, total=1, detail="")
        while True:
            if check is not None:
                check()
            if time.monotonic() >= next_pass:  # as often as a worker's reconciler, not at every look
                next_pass = time.monotonic() + settings.reconcile_s
                try:
                    reconcile_once(engine, settings, celery, run_id)
                except TRANSIENT as exc:
                    logger.debug("reconciler pass skipped: %s", exc)
            counts, workers = _reach(lambda: _look(engine, run, settings), progress.console, unreachable_s)
            view = workers_view(workers, counts, starting=time.monotonic() - started < starting_s)
            if shown != (view.summary, view.problems):
                shown = (view.summary, view.problems)
                progress.console.print(escape(view.summary), highlight=False, soft_wrap=True)
                for problem in view.problems:
                    progress.console.print(f"[red]{escape(problem)}[/red]", highlight=False, soft_wrap=True)
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


def _look(engine: Engine, run: str, settings: Settings) -> tuple[dict[str, int], list[Worker]]:
    """The run's counts per status and the workers seen lately."""
    with session_scope(engine) as session:
        return status_counts(session, run), recent_workers(session, LIVE_BEATS * settings.heartbeat_s)


def _reach(ask: Callable[[], T], console: Console, unreachable_s: float) -> T:
    """``ask()``, asked again while the record (or broker) does not answer, one line per outage."""
    since = None
    while True:
        try:
            answer = ask()
        except TRANSIENT as exc:
            now = time.monotonic()
            if since is None:
                since = now
                console.print(f"[yellow]record unreachable, retrying[/yellow] ({escape(type(exc).__name__)})",
                              highlight=False)
            if now - since > unreachable_s:
                raise RecordUnreachableError(f"the record did not answer for {unreachable_s:g} s: "
                                             f"{' '.join(str(exc).split())[:300]}") from exc
            time.sleep(min(2.0, unreachable_s / 10 + 0.1))
            continue
        if since is not None:
            console.print(f"record reachable again after {time.monotonic() - since:.0f} s", highlight=False)
        return answer
