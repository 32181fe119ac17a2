"""heartseg worker gpu --devices 0,1: one worker process per device, each pinned to its own device."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import redis

from heartseg.settings import Settings
from workers.celery_app import create_app


def test_each_device_gets_its_own_pinned_worker() -> None:
    db = int(uuid.uuid4().int % 5) + 10
    redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
    url = f"redis://127.0.0.1:6379/{db}"
    env = {**os.environ, "HEARTSEG_BROKER_URL": url}
    launcher = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "worker", "gpu", "--devices", "0,1"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    app = create_app(Settings(broker_url=url))
    try:
        replies: dict[str, dict] = {}
        deadline = time.monotonic() + 120
        while len(replies) < 2 and time.monotonic() < deadline:
            replies = app.control.inspect(timeout=2.0)._request("device") or {}
        host = socket.gethostname()
        assert sorted(replies) == [f"gpu0@{host}", f"gpu1@{host}"]
        for name, reply in replies.items():
            device = name[len("gpu"):name.index("@")]
            assert reply["CUDA_VISIBLE_DEVICES"] == device
            assert reply["hostname"] == name
            assert reply["HEARTSEG_DEVICE"] == "cuda"
    finally:
        launcher.send_signal(signal.SIGTERM)  # the launcher forwards it; workers shut down warm
        try:
            assert launcher.wait(60) == 0
        finally:
            if launcher.poll() is None:
                os.killpg(launcher.pid, signal.SIGKILL)
        redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
