"""Prometheus metrics of the workers: what Flower does not know (studies per run and outcome, seconds per stage).

A worker serves them at ``http://0.0.0.0:$HEARTSEG_METRICS_PORT/metrics`` (off when the port is
unset). Celery's prefork pool runs tasks in child processes, so the metrics use
prometheus-client's multiprocess mode: every process writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` and the worker's main process serves their sum. ``heartseg worker``
gives each worker a fresh folder in its environment (:func:`new_multiprocess_dir`).

prometheus-client comes with the ``[monitoring]`` extra: without it a worker runs with its metrics off
(counting does nothing), and asking for the endpoint is a :class:`~heartseg.extras.MissingExtraError`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from heartseg.extras import installed, require

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Stages of a study, in order: read the source, nnU-Net's preprocessing, the network, nnU-Net's export of
#: the logits to a label map in the source geometry, writing masks/SEGs (and STOW), metrics and indices;
#: and the time the device waited for preprocessed frames (``device_wait``).
STAGES = ("load", "preprocess", "forward", "export", "write", "metrics", "device_wait")
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def require_prometheus() -> None:
    """Refuse (:class:`~heartseg.extras.MissingExtraError`) a metrics endpoint without prometheus-client."""
    require("HEARTSEG_METRICS_PORT (the workers' Prometheus endpoint)", "monitoring", "prometheus_client")


def new_multiprocess_dir(name: str) -> str:
    """A fresh folder for one worker's metric files (the launcher puts it in the worker's environment, since
    ``celery`` imports prometheus-client through Flower's command plugin before any HeartSeg code runs)."""
    return tempfile.mkdtemp(prefix=f"heartseg-metrics-{name}-")


def _multiprocess_ready() -> bool:
    """Whether prometheus-client keeps its values in ``PROMETHEUS_MULTIPROC_DIR`` files in this process."""
    from prometheus_client import values

    # prometheus-client picks the value class once, at import, from the environment.
    return MULTIPROC_ENV in os.environ and values.ValueClass.__name__ == "MmapedValue"


def clear_multiprocess_dir() -> None:
    """Remove metric files of an earlier life of this worker (they would be summed in)."""
    folder = Path(os.environ[MULTIPROC_ENV])
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


class _Metrics:
    """The metric objects, created on first use (after the multiprocess folder is set)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.studies = Counter("heartseg_studies_total", "Studies finished by this worker, per run and outcome "
                               "(segmented: masks recorded; done: metrics recorded; failed: bad input).",
                               ["run", "outcome"])
        self.stage_seconds = Histogram("heartseg_stage_seconds", "Seconds spent per stage of a study "
                                       "(per frame for preprocess, forward, export).", ["stage"],
                                       buckets=STAGE_BUCKETS)
        self.frames = Counter("heartseg_frames_segmented_total", "Frames segmented, per run.", ["run"])


_metrics: _Metrics | None = None
#: Whether prometheus-client is installed (the [monitoring] extra); without it the metrics are off.
ENABLED = installed("prometheus_client")


def metrics() -> _Metrics | None:
    """This process's metric objects; None without prometheus-client."""
    global _metrics
    if _metrics is None and ENABLED:
        _metrics = _Metrics()
    return _metrics


def count_study(run: str, outcome: str) -> None:
    """One more study of ``run`` reached ``outcome`` (segmented, done, failed)."""
    if (m := metrics()) is not None:
        m.studies.labels(run=run, outcome=outcome).inc()


def observe_stage(stage: str, seconds: float) -> None:
    """Record the time one stage took."""
    if (m := metrics()) is not None:
        m.stage_seconds.labels(stage=stage).observe(seconds)


def count_frames(run: str, n: int) -> None:
    """``n`` more frames of ``run`` segmented."""
    if (m := metrics()) is not None:
        m.frames.labels(run=run).inc(n)


def start_metrics_server(port: int) -> None:
    """Serve the summed metrics of this worker's processes on ``0.0.0.0:port``.

    Without ``PROMETHEUS_MULTIPROC_DIR`` in the environment from the start (a worker started
    by ``celery worker`` rather than ``heartseg worker``), only this process's own values are
    served: right for the solo pool of a GPU worker, incomplete for a prefork pool.

    Raises
    ------
    MissingExtraError
        Without prometheus-client (the ``[monitoring]`` extra).
    """
    require_prometheus()
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    if _multiprocess_ready():
        clear_multiprocess_dir()
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        logger.warning("PROMETHEUS_MULTIPROC_DIR was not set when the worker started: serving the main "
                       "process's metrics only (start workers with `heartseg worker`)")
        registry = REGISTRY
    start_http_server(port, registry=registry)
    logger.info("metrics on http://0.0.0.0:%d/metrics", port)


def process_exited(pid: int) -> None:
    """Forget a dead pool process's live gauges (counters and histograms keep its counts)."""
    if not ENABLED:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
