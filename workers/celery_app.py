"""The Celery app, configured from the settings (the process's ``HEARTSEG_*`` variables).

Importing this module does nothing but define names: it imports neither torch nor nnunetv2,
reads no settings and touches no folder. The scheduler builds its app with :func:`create_app`;
``celery -A workers.celery_app`` (the workers, Flower) gets the process's app from the module's
``app`` attribute, created on first access.
"""

from __future__ import annotations

import logging
from functools import cache

from celery import Celery
from celery.signals import setup_logging, worker_init, worker_process_shutdown

from heartseg.extras import MissingExtraError
from heartseg.logs import configure_logging
from heartseg.settings import Settings, get_settings

SEGMENT_TASK = "heartseg.segment_study"
EVALUATE_TASK = "heartseg.evaluate_study"
GPU_QUEUE = "gpu"
CPU_QUEUE = "cpu"


def celery_config(settings: Settings) -> dict[str, object]:
    """Celery settings for HeartSeg; the record, not a result backend, holds every study's state."""
    return {
        **broker_config(settings),
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        # A study's message is acknowledged only when its task finishes, and given back when the
        # worker process dies, so no study is lost; the tasks are idempotent, so a re-delivery is safe.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        "task_routes": {SEGMENT_TASK: {"queue": GPU_QUEUE}, EVALUATE_TASK: {"queue": CPU_QUEUE}},
        "task_default_queue": CPU_QUEUE,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "worker_hijack_root_logger": False,
        "broker_connection_retry_on_startup": True,
    }


def broker_config(settings: Settings) -> dict[str, object]:
    """Redis when ``HEARTSEG_BROKER_URL`` is set; else kombu's filesystem transport (no server needed),
    in folders :func:`create_app` makes."""
    if settings.broker_url:
        # Redis re-delivers an unacknowledged message after the visibility timeout. It must be longer
        # than the longest task (the hard time limit): a shorter one makes Redis hand a study that is
        # still running to a second worker (the settings refuse one); a dead worker's study is
        # re-queued from its expired lease in the record instead, long before this timeout.
        return {"broker_url": settings.broker_url,
                "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_s}}
    folder = settings.embedded_broker_dir.resolve()
    return {"broker_url": "filesystem://",
            "broker_transport_options": {"data_folder_in": str(folder / "queue"),
                                         "data_folder_out": str(folder / "queue"),
                                         "control_folder": str(folder / "control"), "store_processed": False}}


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app configured from ``settings`` (default: the process's settings); for the embedded
    broker, its folders are made."""
    settings = settings or get_settings()
    if not settings.broker_url:
        folder = settings.embedded_broker_dir.resolve()
        for sub in ("queue", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    app = Celery("heartseg", include=["workers.tasks"])
    app.conf.update(celery_config(settings))
    return app


@cache
def process_app() -> Celery:
    """The app of this process (``celery -A workers.celery_app``), made from its settings on first use."""
    return create_app()


def __getattr__(name: str) -> Celery:
    """``workers.celery_app.app``: :func:`process_app`, made when first asked for, not at import."""
    if name == "app":
        return process_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@setup_logging.connect
def _setup_logging(loglevel: int | str | None = None, **_: object) -> None:
    """Workers log through HeartSeg's handler (text or JSON, with run and study ids) instead of Celery's."""
    level = logging.getLevelName(loglevel) if isinstance(loglevel, str) else (loglevel or logging.INFO)
    configure_logging(get_settings().log_format, level)


@worker_init.connect
def _serve_metrics(**_: object) -> None:
    """With ``HEARTSEG_METRICS_PORT`` set, serve the worker's Prometheus metrics from its main process (a worker
    without prometheus-client says so and works on, its metrics off)."""
    from workers import monitoring

    port = get_settings().metrics_port
    if port is not None:
        try:
            monitoring.start_metrics_server(port)
        except MissingExtraError as exc:
            logging.getLogger(__name__).error("%s; this worker serves no metrics", exc)


@worker_process_shutdown.connect
def _pool_process_exited(pid: int | None = None, **_: object) -> None:
    from workers import monitoring

    if pid is not None and get_settings().metrics_port is not None:
        monitoring.process_exited(pid)

