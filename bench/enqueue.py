"""Benchmark: record and enqueue 10,000 studies (``heartseg submit``'s work) on PostgreSQL + Redis.

Writes ``docs/bench-enqueue.md``: the median of several runs, each on a scratch database and an
empty Redis db 15, both removed after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from db.session import open_record
from heartseg.settings import Settings
from scheduler.submit import submit_sources
from workers.celery_app import GPU_QUEUE, create_app
from workers.enqueue import enqueue_segmentation

BROKER = "redis://127.0.0.1:6379/15"


@dataclass(frozen=True)
class Timing:
    """Seconds one run took to record the studies and to enqueue their messages, and the queue's length after."""

    record_s: float
    enqueue_s: float
    queued: int

    @property
    def total_s(self) -> float:
        return self.record_s + self.enqueue_s


def fake_model(root: Path) -> Path:
    """A tiny stand-in model folder: submit only fingerprints files, it never loads them."""
    model = root / "model"
    (model / "fold_0").mkdir(parents=True)
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"weights")
    (model / "plans.json").write_text("{}")
    (model / "dataset.json").write_text("{}")
    return model


def one_run(admin: Engine, postgres: str, studies: int) -> Timing:
    """Record and enqueue ``studies`` studies on a fresh database and an empty queue; checks the queue length."""
    name = f"heartseg_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres).set(database=name).render_as_string(hide_password=False)
    queue = redis.Redis.from_url(BROKER)
    queue.flushdb()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model = fake_model(Path(tmp))
            settings = Settings(database_url=url, broker_url=BROKER, trusted_model_roots=[Path(tmp)])
            engine = open_record(url)
            sources = [f"/data/cohort/patient{i:06d}" for i in range(studies)]
            t0 = time.perf_counter()
            submission = submit_sources(engine, settings, name="bench", source_uri="/data/cohort", sources=sources,
                                        model_dir=model)
            t1 = time.perf_counter()
            sent = enqueue_segmentation(create_app(settings), submission.study_ids)
            t2 = time.perf_counter()
            queued = queue.llen(GPU_QUEUE)
            engine.dispose()
    finally:
        queue.flushdb()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    if not len(submission.study_ids) == sent == queued == studies:
        raise RuntimeError(f"expected {studies} studies recorded and queued; recorded {len(submission.study_ids)}, "
                           f"sent {sent}, {queued} in the queue")
    return Timing(t1 - t0, t2 - t1, queued)


def report(studies: int, timings: list[Timing]) -> str:
    """The Markdown page: medians over the runs, then every run's total."""
    record = statistics.median(t.record_s for t in timings)
    enqueue = statistics.median(t.enqueue_s for t in timings)
    total = statistics.median(t.total_s for t in timings)
    queued = statistics.median(t.queued for t in timings)
    runs = ", ".join(f"{t.total_s:.2f} s ({t.queued} messages)" for t in timings)
    return "\n".join([
        "# Enqueue benchmark", "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m bench.enqueue` on {os.cpu_count()} CPU cores, "
        "PostgreSQL and Redis on 127.0.0.1. Each run records the studies in a fresh database and enqueues "
        "their messages (with their task-sent events) on an empty Redis; every column is the median of "
        f"{len(timings)} runs.", "",
        "| studies | record run + studies (s) | enqueue messages (s) | total (s) | messages in queue |",
        "|---|---|---|---|---|",
        f"| {studies} | {record:.2f} | {enqueue:.2f} | {total:.2f} | {queued:.0f} |", "",
        f"Each run: {runs}.",
    ]) + "\n"


def main() -> None:
    """Time recording and enqueueing N studies, several times."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", default=os.environ.get("HEARTSEG_TEST_POSTGRES_URL",
                                                             "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--out", type=Path, default=Path("docs/bench-enqueue.md"))
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    timings = [one_run(admin, args.postgres, args.studies) for _ in range(args.runs)]
    admin.dispose()
    page = report(args.studies, timings)
    print(page)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)


if __name__ == "__main__":
    main()
