"""Enqueueing on the real Redis: each study once on the gpu queue, as the message Celery's ``send_task`` makes,
with its task-sent event; and on the embedded filesystem broker, which has no batches."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from heartseg.settings import Settings
from workers.celery_app import GPU_QUEUE, SEGMENT_TASK, create_app
from workers.enqueue import enqueue_segmentation

# A Redis db no other test flushes; the key prefix keeps concurrent runs of this file apart.
DB = 3
STUDIES = 300


@pytest.fixture
def client() -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=6379, db=DB)


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    prefix = f"heartseg-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = client.keys(f"{prefix}*")
    if keys:
        client.delete(*keys)


@pytest.fixture
def app(prefix: str) -> Celery:
    app = create_app(Settings(broker_url=f"redis://127.0.0.1:6379/{DB}"))
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "global_keyprefix": prefix}
    return app


def decode(raw: bytes) -> tuple[dict[str, Any], Any]:
    """A kombu envelope as Redis holds it, and its body decoded."""
    envelope = json.loads(raw)
    assert envelope["properties"]["body_encoding"] == "base64"
    return envelope, json.loads(base64.b64decode(envelope["body"]))


def events(pubsub: redis.client.PubSub, count: int) -> list[dict[str, Any]]:
    """The next ``count`` events published (waiting up to 30 s)."""
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while len(received) < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
        if message is not None and message["type"] == "pmessage":
            received.append(decode(message["data"])[1])
    return received


def without_ids(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope less what differs between two messages of the same task: ids, arguments and body."""
    headers = {k: v for k, v in envelope["headers"].items() if k not in ("id", "root_id", "argsrepr")}
    properties = {k: v for k, v in envelope["properties"].items() if k not in ("correlation_id", "delivery_tag")}
    return {**envelope, "body": None, "headers": headers, "properties": properties}


def test_each_study_is_enqueued_once_as_send_task_would(app: Celery, client: redis.Redis, prefix: str) -> None:
    study_ids = list(range(1001, 1001 + STUDIES))
    pubsub = client.pubsub()
    pubsub.psubscribe(f"{prefix}*celeryev*")
    pubsub.get_message(timeout=5)  # the subscription's confirmation
    sizes: list[int] = []
    assert enqueue_segmentation(app, study_ids, on_sent=sizes.append, chunk=128) == STUDIES
    assert sizes == [128, 128, 44]

    queue = f"{prefix}{GPU_QUEUE}"
    assert client.llen(queue) == STUDIES
    messages = [decode(raw) for raw in reversed(client.lrange(queue, 0, -1))]  # workers pop from the tail
    assert [body[0] for _, body in messages] == [[study] for study in study_ids]  # each once, in order
    for (envelope, body), study in zip(messages, study_ids, strict=True):
        headers, properties = envelope["headers"], envelope["properties"]
        assert headers["task"] == SEGMENT_TASK and headers["argsrepr"] == f"[{study}]"
        assert headers["id"] == headers["root_id"] == properties["correlation_id"]
        assert properties["delivery_info"] == {"exchange": "", "routing_key": GPU_QUEUE}
        assert body[1] == {} and envelope["content-type"] == "application/json"
    assert len({envelope["headers"]["id"] for envelope, _ in messages}) == STUDIES

    sent = events(pubsub, STUDIES)
    assert sorted(e["uuid"] for e in sent) == sorted(envelope["headers"]["id"] for envelope, _ in messages)
    assert {(e["type"], e["name"], e["queue"]) for e in sent} == {("task-sent", SEGMENT_TASK, GPU_QUEUE)}

    app.send_task(SEGMENT_TASK, args=[study_ids[0]], queue=GPU_QUEUE)  # Celery's own way, one message
    reference, reference_body = decode(client.lpop(queue))
    assert without_ids(reference) == without_ids(messages[0][0]) and reference_body == messages[0][1]
    assert events(pubsub, 1)[0].keys() == sent[0].keys()
    pubsub.close()


def test_enqueue_on_the_embedded_broker(tmp_path: Path) -> None:
    app = create_app(Settings(broker_url=None, embedded_broker_dir=tmp_path / "broker"))
    sizes: list[int] = []
    assert enqueue_segmentation(app, [7, 8, 9], on_sent=sizes.append, chunk=2) == 3
    assert sizes == [2, 1]
    files = sorted((tmp_path / "broker" / "queue").glob(f"*.{GPU_QUEUE}.msg"))
    bodies = sorted(decode(path.read_bytes())[1][0] for path in files)
    assert bodies == [[7], [8], [9]]


def test_a_chunk_holds_one_message_at_least(app: Celery) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        enqueue_segmentation(app, [1], chunk=0)
