"""Celery tasks: thin wrappers that take a study id and call :mod:`workers.pipeline`.

Expensive resources (database engine, results store, loaded models) are created lazily,
once per worker process, on first use.
"""

from __future__ import annotations

import logging
import os
import threading
from functools import cached_property
from pathlib import Path
from typing import Any

from celery import Task
from celery.worker.control import inspect_command
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from db.lifecycle import renew_lease
from db.schema import Model, Run, Study
from db.session import make_engine, session_scope
from heartseg.logs import log_context
from heartseg.settings import get_settings
from heartseg.storage import ResultStore, StorageError, open_store
from workers.celery_app import CPU_QUEUE, EVALUATE_TASK, GPU_QUEUE, SEGMENT_TASK, app
from workers.pipeline import ModelInfo, evaluate_stage, segment_stage

logger = logging.getLogger(__name__)

#: Failures worth retrying with backoff: the database, broker or storage was unreachable for a moment.
TRANSIENT = (OperationalError, ConnectionError, TimeoutError, StorageError)


class StudyTask(Task):
    """Base task holding this process's engine, store and loaded models."""

    abstract = True
    autoretry_for = TRANSIENT
    retry_backoff = True
    retry_backoff_max = 300
    max_retries = 8

    @cached_property
    def engine(self) -> Engine:
        return make_engine(get_settings().database_url)

    @cached_property
    def store(self) -> ResultStore:
        settings = get_settings()
        return open_store(settings.results_uri, settings.s3_endpoint_url)

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

                settings = get_settings()
                self.models[model_path] = Segmenter.from_settings(settings, model_dir=Path(model_path))
            return self.models[model_path]


@app.task(bind=True, base=StudyTask, name=SEGMENT_TASK, queue=GPU_QUEUE)
def segment_study(self: StudyTask, study_id: int) -> None:
    """Segment one study and hand it to the CPU queue for metrics."""
    with session_scope(self.engine) as session:
        path, run = session.execute(
            select(Model.path, Run.name).join(Run, Run.model_id == Model.id).join(Study, Study.run_id == Run.id)
            .where(Study.id == study_id)
        ).one()
    with log_context(run=run, study_id=study_id):
        _segment(self, study_id, path)


def _segment(self: StudyTask, study_id: int, path: str) -> None:
    segmenter = self.segmenter_for(path)
    settings = get_settings()
    worker = self.request.hostname or "worker"

    def renew() -> None:
        with session_scope(self.engine) as session:
            renew_lease(session, study_id, worker, settings.lease_s)

    def enqueue_evaluation() -> None:
        evaluate_study.apply_async(args=[study_id], queue=CPU_QUEUE)

    model = ModelInfo(segmenter.fingerprint, segmenter.segment, segmenter.segment_frames)
    segment_stage(self.engine, study_id, model, self.store, worker=worker, lease_s=settings.lease_s, renew=renew,
                  enqueue_evaluation=enqueue_evaluation)


@app.task(bind=True, base=StudyTask, name=EVALUATE_TASK, queue=CPU_QUEUE)
def evaluate_study(self: StudyTask, study_id: int) -> None:
    """Metrics and cardiac indices of one segmented study."""
    with session_scope(self.engine) as session:
        run = session.execute(select(Run.name).join(Study, Study.run_id == Run.id)
                              .where(Study.id == study_id)).scalar_one()
    with log_context(run=run, study_id=study_id):
        evaluate_stage(self.engine, study_id, self.store)


@inspect_command()
def device(state: Any) -> dict[str, str | None]:
    """``celery inspect device``: the CUDA device this worker process is pinned to, and its name."""
    return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), "hostname": state.hostname,
            "HEARTSEG_DEVICE": os.environ.get("HEARTSEG_DEVICE")}
