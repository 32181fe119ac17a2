"""Celery tasks: thin wrappers that take a study id and call :mod:`workers.pipeline`.

They are shared tasks: they join the app that the worker process runs (``celery -A
workers.celery_app``). The stage context (record, results store, sources, settings) and the
loaded models are made once per worker process, on first use.
"""

from __future__ import annotations

import logging
import os
import threading
from functools import cached_property
from pathlib import Path
from typing import Any

from celery import Task, shared_task
from celery.worker.control import inspect_command

from db.reads import model_path_and_run, run_name_of
from db.session import session_scope
from heartseg.enums import StudyStatus
from heartseg.logs import log_context
from heartseg.models import ModelError
from heartseg.settings import get_settings
from workers import heartbeat
from workers.celery_app import CPU_QUEUE, EVALUATE_TASK, GPU_QUEUE, SEGMENT_TASK
from workers.pipeline import FailedTryError, ModelInfo, evaluate_stage, refuse_study, segment_stage
from workers.stage_context import StageContext
from workers.transient import TRANSIENT

logger = logging.getLogger(__name__)


class StudyTask(Task):
    """Base task holding this process's stage context and loaded models."""

    abstract = True
    autoretry_for = TRANSIENT
    retry_backoff = True
    retry_backoff_max = 300
    max_retries = 8

    @cached_property
    def context(self) -> StageContext:
        """The record, results store, sources and settings of this worker process."""
        return StageContext.from_settings(get_settings())

    @cached_property
    def models(self) -> dict[str, Any]:
        return {}

    #: A segmentation worker runs a few studies at once on threads (one on the device, the others loading
    #: or writing); they share one loaded model.
    _models_lock = threading.Lock()

    def segmenter_for(self, model_path: str) -> Any:
        """The loaded segmenter of a model folder (loaded on first use, then kept and shared by the threads)."""
        with self._models_lock:
            if model_path not in self.models:
                from workers.inference.predictor import Segmenter  # torch: only GPU workers get here

                self.models[model_path] = Segmenter.from_settings(self.context.settings, model_dir=Path(model_path))
                heartbeat.note_model(self.models[model_path].fingerprint)
            return self.models[model_path]


@shared_task(bind=True, base=StudyTask, name=SEGMENT_TASK, queue=GPU_QUEUE)
def segment_study(self: StudyTask, study_id: int) -> None:
    """Segment one study and hand it to the CPU queue for metrics."""
    with session_scope(self.context.engine) as session:
        path, run = model_path_and_run(session, study_id)
    with log_context(run=run, study_id=study_id):
        _segment(self, study_id, path)


def _segment(self: StudyTask, study_id: int, path: str) -> None:
    ctx = self.context
    worker = self.request.hostname or "worker"
    try:
        segmenter = self.segmenter_for(path)
    except TRANSIENT:
        raise
    except Exception as exc:  # every study of the run fails the same way: the reason is recorded on each
        problem = exc if isinstance(exc, ModelError) else ModelError(
            f"the model in {path} cannot be loaded: {type(exc).__name__}: {' '.join(str(exc).split())}")
        heartbeat.note_error(str(problem))
        refuse_study(ctx, study_id, problem, worker=worker)
        return

    def enqueue_evaluation() -> None:
        self.app.send_task(EVALUATE_TASK, args=[study_id], queue=CPU_QUEUE)

    model = ModelInfo(segmenter.fingerprint, segmenter.segment, segmenter.segment_frames)
    try:
        segment_stage(ctx, study_id, model, worker=worker, enqueue_evaluation=enqueue_evaluation)
    except FailedTryError as failed:
        _after_failed_try(self, failed, SEGMENT_TASK, GPU_QUEUE, again=StudyStatus.QUEUED)


def _after_failed_try(task: StudyTask, failed: FailedTryError, name: str, queue: str, again: StudyStatus) -> None:
    """Show the error in the worker's heartbeat; send the study's message again when it has tries left."""
    heartbeat.note_error(f"study {failed.study_id}: {failed.reason}")
    if failed.status is again:
        task.app.send_task(name, args=[failed.study_id], queue=queue)


@shared_task(bind=True, base=StudyTask, name=EVALUATE_TASK, queue=CPU_QUEUE)
def evaluate_study(self: StudyTask, study_id: int) -> None:
    """Metrics and cardiac indices of one segmented study."""
    with session_scope(self.context.engine) as session:
        run = run_name_of(session, study_id)
    with log_context(run=run, study_id=study_id):
        try:
            evaluate_stage(self.context, study_id)
        except FailedTryError as failed:
            _after_failed_try(self, failed, EVALUATE_TASK, CPU_QUEUE, again=StudyStatus.SEGMENTED)


@inspect_command()
def device(state: Any) -> dict[str, str | None]:
    """``celery inspect device``: the CUDA device this worker process is pinned to, and its name."""
    return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), "hostname": state.hostname,
            "HEARTSEG_DEVICE": os.environ.get("HEARTSEG_DEVICE")}
