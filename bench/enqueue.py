"""Benchmark: record and enqueue 10,000 studies (``heartseg submit``'s work) on PostgreSQL + Redis.

Writes ``docs/bench-enqueue.md``. Uses a scratch database and Redis db 15, both removed after.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from db.session import open_record
from heartseg.settings import Settings
from scheduler.enqueue import enqueue_segmentation
from scheduler.submit import submit_sources
from workers.celery_app import create_app


def fake_model(root: Path) -> Path:
    """A tiny stand-in model folder: submit only fingerprints files, it never loads them."""
    model = root / "model"
    (model / "fold_0").mkdir(parents=True)
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"weights")
    (model / "plans.json").write_text("{}")
    (model / "dataset.json").write_text("{}")
    return model


def main() -> None:
    """Time recording and enqueueing N studies."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--postgres", default=os.environ.get("HEARTSEG_TEST_POSTGRES_URL",
                                                             "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--out", type=Path, default=Path("docs/bench-enqueue.md"))
    args = parser.parse_args()
    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    name = f"heartseg_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
    broker = "redis://127.0.0.1:6379/15"
    redis.Redis.from_url(broker).flushdb()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model = fake_model(Path(tmp))
            settings = Settings(database_url=url, broker_url=broker, trusted_model_roots=[Path(tmp)])
            engine = open_record(url)
            sources = [f"/data/cohort/patient{i:06d}" for i in range(args.studies)]
            t0 = time.perf_counter()
            submission = submit_sources(engine, settings, name="bench", source_uri="/data/cohort", sources=sources,
                                        model_dir=model)
            t1 = time.perf_counter()
            sent = enqueue_segmentation(create_app(settings), submission.study_ids)
            t2 = time.perf_counter()
            queued = redis.Redis.from_url(broker).llen("gpu")
            engine.dispose()
    finally:
        redis.Redis.from_url(broker).flushdb()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    report = "\n".join([
        "# Enqueue benchmark", "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m bench.enqueue` on {os.cpu_count()} CPU cores, "
        "PostgreSQL and Redis on 127.0.0.1.", "",
        "| studies | record run + studies (s) | enqueue messages (s) | total (s) | messages in queue |",
        "|---|---|---|---|---|",
        f"| {len(submission.study_ids)} | {t1 - t0:.2f} | {t2 - t1:.2f} | {t2 - t0:.2f} | {queued} |",
    ]) + "\n"
    assert sent == queued == args.studies, (sent, queued)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


if __name__ == "__main__":
    main()
