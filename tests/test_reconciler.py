"""The record heals itself: expired leases re-queue or fail out of tries, lost messages are sent again only when
their queue is idle, failed tries are counted, and a broker that is down leaves the record unchanged."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from kombu.exceptions import OperationalError
from sqlalchemy import Engine, select, update

from db.lifecycle import (
    claim_study,
    mark_segmented,
    now,
    record_failed_evaluation,
    record_failed_try,
    release_claim,
)
from db.reconcile import reconcile_record
from db.schema import Study
from db.session import open_record, session_scope
from heartseg.enums import StudyStatus
from heartseg.settings import Settings
from tests.record_fixtures import new_run
from workers.celery_app import CPU_QUEUE, GPU_QUEUE, create_app
from workers.reconciler import reconcile_once


def age(engine: Engine, study_id: int, seconds: float, **columns: bool) -> None:
    """Move the study's chosen time columns ``seconds`` into the past."""
    moment = now() - timedelta(seconds=seconds)
    with session_scope(engine) as session:
        session.execute(update(Study).where(Study.id == study_id).values({c: moment for c in columns}))


def study(engine: Engine, study_id: int) -> Study:
    with session_scope(engine) as session:
        return session.execute(select(Study).where(Study.id == study_id)).scalar_one()


def test_expired_leases_requeue_until_the_last_try_then_fail(record_url: str) -> None:
    engine = open_record(record_url)
    _, ids = new_run(engine, "heal", sources=["a", "b"])
    a, b = ids["a"], ids["b"]
    for attempt in (1, 2, 3):
        with session_scope(engine) as session:
            assert claim_study(session, a, f"gpu0@host{attempt}", lease_s=60, max_attempts=3)
            assert claim_study(session, b, "gpu1@host", lease_s=60, max_attempts=3) is (attempt == 1)
        age(engine, a, 120, lease_expires_at=True)
        with session_scope(engine) as session:
            result = reconcile_record(session, max_attempts=3, stall_s=600)
        if attempt < 3:
            assert (result.requeued, result.failed, result.segment) == ([a], [], [a])
            assert study(engine, a).status is StudyStatus.QUEUED
            assert "WorkerLost: worker gpu0@host" in (study(engine, a).error or "")
        else:
            assert (result.requeued, result.failed) == ([], [a])
    failed = study(engine, a)
    assert failed.status is StudyStatus.FAILED and failed.attempts == 3
    assert failed.error is not None and failed.error.startswith("WorkerLost: worker gpu0@host3")
    assert failed.error.endswith("(after 3 tries)")
    assert study(engine, b).status is StudyStatus.RUNNING  # its lease holds
    engine.dispose()


def test_a_message_is_sent_again_only_when_its_queue_made_no_progress(record_url: str) -> None:
    engine = open_record(record_url)
    _, ids = new_run(engine, "lost", sources=["q", "s", "busy"])
    q, s, busy = ids["q"], ids["s"], ids["busy"]
    with session_scope(engine) as session:
        assert claim_study(session, s, "gpu0@a", lease_s=60)
        mark_segmented(session, s, "gpu0@a")
    for study_id in (q, s, busy):
        age(engine, study_id, 120, enqueued_at=True, queued_at=True, started_at=True)
    with session_scope(engine) as session:
        assert not reconcile_record(session, max_attempts=3, stall_s=600)  # sent 2 min ago: not lost yet
        result = reconcile_record(session, max_attempts=3, stall_s=60, queues_idle=(False, False))
        assert not result  # messages wait in the queues: nothing is lost
        result = reconcile_record(session, max_attempts=3, stall_s=60)
    assert (result.segment, result.evaluate) == ([q, busy], [s])
    with session_scope(engine) as session:  # just sent: not again at the next pass
        assert not reconcile_record(session, max_attempts=3, stall_s=60)
    age(engine, q, 120, enqueued_at=True)
    with session_scope(engine) as session:
        assert claim_study(session, busy, "gpu0@a", lease_s=60)  # a worker is making progress on the queue
        assert reconcile_record(session, max_attempts=3, stall_s=60).segment == []
    engine.dispose()


def test_failed_tries_count_and_transient_errors_do_not(record_url: str) -> None:
    engine = open_record(record_url)
    _, ids = new_run(engine, "tries", sources=["x", "y"])
    x, y = ids["x"], ids["y"]
    with session_scope(engine) as session:
        assert claim_study(session, x, "w", lease_s=60)
        assert release_claim(session, x, "w")  # the record or storage blinked: not counted
    assert (study(engine, x).status, study(engine, x).attempts) == (StudyStatus.QUEUED, 0)
    outcomes = []
    for _ in range(3):
        with session_scope(engine) as session:
            assert claim_study(session, x, "w", lease_s=60)
            assert record_failed_try(session, x, "other", "ValueError: boom", 3) is None  # not its study
            outcomes.append(record_failed_try(session, x, "w", "ValueError: boom", 3))
    assert outcomes == [StudyStatus.QUEUED, StudyStatus.QUEUED, StudyStatus.FAILED]
    assert study(engine, x).error == "ValueError: boom (after 3 tries)"
    with session_scope(engine) as session:
        assert claim_study(session, y, "w", lease_s=60)
        mark_segmented(session, y, "w")
        assert record_failed_evaluation(session, y, "KeyError: 'LV'", 3) is StudyStatus.SEGMENTED
        assert record_failed_evaluation(session, y, "KeyError: 'LV'", 3) is StudyStatus.FAILED
        assert record_failed_evaluation(session, y, "KeyError: 'LV'", 3) is None
    assert study(engine, y).error == "KeyError: 'LV' (after 3 tries)"
    engine.dispose()


@pytest.fixture
def redis_db() -> Iterator[int]:
    """A Redis database of its own, emptied before and after."""
    db = 16 - 1 - int(uuid.uuid4().int % 4)
    client = redis.Redis(host="127.0.0.1", port=6379, db=db)
    client.flushdb()
    yield db
    client.flushdb()


def test_a_pass_sends_the_messages_or_changes_nothing(postgres_url: str, redis_db: int, tmp_path: object) -> None:
    engine = open_record(postgres_url)
    _, ids = new_run(engine, "send", sources=["lost", "dead"])
    lost, dead = ids["lost"], ids["dead"]
    with session_scope(engine) as session:
        assert claim_study(session, dead, "gpu0@a", lease_s=60)
    age(engine, dead, 1200, lease_expires_at=True, started_at=True)
    age(engine, lost, 1200, enqueued_at=True, queued_at=True)
    down = Settings(broker_url="redis://127.0.0.1:1/0", stall_s=600)
    with pytest.raises(OperationalError):  # kombu's: the broker does not answer
        reconcile_once(engine, down, create_app(down))
    assert [study(engine, i).status for i in (lost, dead)] == [StudyStatus.QUEUED, StudyStatus.RUNNING]
    settings = Settings(broker_url=f"redis://127.0.0.1:6379/{redis_db}", stall_s=600)
    result = reconcile_once(engine, settings, create_app(settings))
    assert sorted(result.segment) == sorted([lost, dead]) and result.requeued == [dead]
    client = redis.Redis(host="127.0.0.1", port=6379, db=redis_db)
    assert client.llen(GPU_QUEUE) == 2 and client.llen(CPU_QUEUE) == 0
    assert not reconcile_once(engine, settings, create_app(settings))  # the queue holds them now
    engine.dispose()
