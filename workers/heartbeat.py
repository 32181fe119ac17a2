"""What a worker tells the record about itself, and the reconciler every worker runs.

On start (Celery's ``worker_init``) a worker checks that a server's record has this HeartSeg's schema
(else it exits with status 2, saying to run ``heartseg db upgrade``) and writes its row of ``workers``:
name, queue, device, version, host and pid. A segmentation worker first checks its device and loads
the default model,
so that a worker that cannot work says why in the record (``last_error``) and exits with status 2
within seconds, instead of holding studies it cannot segment. Once ready (``worker_ready``), a thread
beats every ``HEARTSEG_HEARTBEAT_S`` (the model it loaded last, the error it met last) and runs a
reconciler pass every ``HEARTSEG_RECONCILE_S`` (:mod:`workers.reconciler`). On a clean shutdown the
row gets ``stopped_at``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_ready, worker_shutdown
from sqlalchemy import Engine

from db.session import make_engine, session_scope
from db.writes import record_heartbeat
from heartseg import __version__
from heartseg.settings import Settings, get_settings
from workers.celery_app import GPU_QUEUE, SEGMENT_TASK

logger = logging.getLogger(__name__)

#: The exit status of a worker that cannot start (its device is unusable, its record at another revision).
START_FAILED = 2


@dataclass
class WorkerState:
    """This worker process as its heartbeat row shows it."""

    name: str
    queue: str
    device: str | None = None
    model_fingerprint: str | None = None
    last_error: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def row(self, stopped: bool = False) -> dict[str, Any]:
        """The ``workers`` row of this worker now."""
        moment = datetime.now(UTC)
        return {"name": self.name, "queue": self.queue, "device": self.device,
                "model_fingerprint": self.model_fingerprint, "version": __version__, "host": socket.gethostname(),
                "pid": os.getpid(), "started_at": self.started_at, "last_seen_at": moment,
                "stopped_at": moment if stopped else None,
                "last_error": None if self.last_error is None else self.last_error[:4000]}


#: This process's worker, once it has started (None elsewhere: a test, the scheduler).
STATE: WorkerState | None = None
_stop = threading.Event()
_thread: threading.Thread | None = None


def note_model(fingerprint: str) -> None:
    """The worker loaded a model (shown with its next beat)."""
    if STATE is not None:
        STATE.model_fingerprint = fingerprint


def note_error(text: str) -> None:
    """The worker met an error worth showing in ``heartseg status`` (one line)."""
    if STATE is not None:
        STATE.last_error = " ".join(text.split())


def beat(engine: Engine, state: WorkerState, stopped: bool = False) -> None:
    """Write the worker's row now."""
    with session_scope(engine) as session:
        record_heartbeat(session, state.row(stopped))


def _queues_of(sender: Any) -> list[str]:
    """The queues a starting worker consumes from."""
    try:
        return sorted(sender.app.amqp.queues.consume_from)
    except AttributeError:
        return []


@worker_init.connect
def _on_worker_init(sender: Any = None, **_: object) -> None:
    """Say who this worker is; a segmentation worker checks its device and loads the default model first."""
    global STATE
    settings = get_settings()
    queues = _queues_of(sender)
    STATE = WorkerState(name=str(getattr(sender, "hostname", "worker")), queue=",".join(queues) or "?")
    engine = make_engine(settings.database_url)  # the record may be away: its tasks retry, the beats warn
    problem = _record_problem(engine)
    if problem is not None:
        logger.error("worker %s cannot start: %s", STATE.name, problem)
        engine.dispose()
        raise SystemExit(START_FAILED)
    if GPU_QUEUE in queues:
        problem = _prepare_segmentation(sender.app, settings)
        if problem is not None:
            STATE.last_error = f"start failed: {problem}"
            logger.error("worker %s cannot start: %s", STATE.name, problem)
            try:
                beat(engine, STATE)
            finally:
                engine.dispose()
            sys.stdout.flush()
            raise SystemExit(START_FAILED)
    try:
        beat(engine, STATE)
    except Exception as exc:  # the beat is information: the worker works without it
        logger.warning("could not write the worker's heartbeat: %s", exc)
    engine.dispose()


def _record_problem(engine: Engine) -> str | None:
    """Why this worker cannot use the record (a server's record at another revision than this HeartSeg's), or
    None; a record that does not answer is no reason (the tasks retry). The embedded record is left to the
    command that started the workers (it migrates it)."""
    from db.migrate import RecordBehindError, require_head

    if engine.dialect.name == "sqlite":
        return None
    try:
        require_head(engine)
    except RecordBehindError as exc:
        return str(exc)
    except Exception as exc:
        logger.warning("the record does not answer yet (%s: %s)", type(exc).__name__, exc)
    return None


def _prepare_segmentation(app: Celery, settings: Settings) -> str | None:
    """Check the device and load the default model into the segment task's cache; the reason when the device
    cannot be used. A default model that cannot be loaded is only noted: runs may use another one."""
    from heartseg.errors import HeartSegError
    from heartseg.models import ModelError

    try:
        from workers.inference.predictor import describe_device, device_problem
    except HeartSegError as exc:  # torch or nnunetv2 missing: the [worker] extra
        return str(exc)
    assert STATE is not None
    problem = device_problem(settings.device)
    if problem is not None:
        return problem
    try:
        STATE.device = describe_device(settings.device)
    except Exception as exc:  # a CUDA runtime that fails on first use
        return f"{type(exc).__name__}: {exc}"
    task: Any = app.tasks[SEGMENT_TASK]  # a workers.tasks.StudyTask
    try:
        segmenter = task.segmenter_for(str(Path(settings.model_dir).resolve()))
    except ModelError as exc:
        note_error(f"default model not loaded: {exc}")
        logger.warning("the default model cannot be loaded (%s); runs of another model still work", exc)
        return None
    except Exception as exc:  # the device failed while the model was put on it
        return f"{type(exc).__name__}: {exc}"
    note_model(segmenter.fingerprint)
    return None


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: object) -> None:
    """Start the heartbeat and reconciler thread."""
    global _thread
    if STATE is None:
        return
    settings = get_settings()
    app = sender.app if sender is not None else None
    _stop.clear()
    _thread = threading.Thread(target=_beat_and_reconcile, args=(settings, STATE, app), name="heartseg-beat",
                               daemon=True)
    _thread.start()


def _beat_and_reconcile(settings: Settings, state: WorkerState, app: Celery | None) -> None:
    """Beat every ``heartbeat_s`` and reconcile every ``reconcile_s`` until the worker shuts down."""
    from workers.reconciler import reconcile_once

    engine = make_engine(settings.database_url)
    next_reconcile = time.monotonic() + settings.reconcile_s
    tick = min(settings.heartbeat_s, settings.reconcile_s)
    while not _stop.wait(tick):
        try:
            beat(engine, state)
        except Exception as exc:
            logger.warning("could not write the worker's heartbeat (%s: %s)", type(exc).__name__, exc)
        if app is not None and time.monotonic() >= next_reconcile:
            next_reconcile = time.monotonic() + settings.reconcile_s
            try:
                reconcile_once(engine, settings, app)
            except Exception as exc:  # the record or broker is away: the next pass tries again
                logger.warning("reconciler pass failed (%s: %s)", type(exc).__name__, exc)
    engine.dispose()


@worker_shutdown.connect
def _on_worker_shutdown(**_: object) -> None:
    """Stop the thread and mark the worker stopped."""
    _stop.set()
    if _thread is not None:
        _thread.join(timeout=10)
    if STATE is None:
        return
    try:
        engine = make_engine(get_settings().database_url)
        beat(engine, STATE, stopped=True)
        engine.dispose()
    except Exception as exc:
        logger.warning("could not mark the worker stopped: %s", exc)
