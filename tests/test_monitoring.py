"""Monitoring on the real servers: Flower with basic auth against Redis and real workers, Prometheus metrics of
Flower and of the workers after a small run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from scheduler.worker_launcher import check_flower_auth
from tests.conftest import free_port
from tests.phantom_cache import write_cohort
from tests.test_pipeline_e2e import environment, heartseg  # noqa: F401 - the fixture

AUTH = ("operator", "s3cret-pass")


@contextmanager
def started(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own group, stopped with SIGTERM (then SIGKILL) on exit."""
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def wait_for(url: str, *, auth: tuple[str, str] | None = None, timeout: float = 90) -> requests.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = requests.get(url, auth=auth, timeout=5)
            if reply.status_code == 200:
                return reply
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer 200 within {timeout} s")
        time.sleep(0.5)


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


@pytest.mark.parametrize(("address", "auth", "ok"), [
    ("127.0.0.1", None, True), ("localhost", None, True), ("::1", None, True),
    ("0.0.0.0", None, False), ("10.1.2.3", None, False), ("0.0.0.0", "a:b", True), ("0.0.0.0", "a:", False),
    ("0.0.0.0", "a:b,c", False),
])
def test_flower_auth_rules(address: str, auth: str | None, ok: bool) -> None:
    if ok:
        check_flower_auth(address, auth)
    else:
        with pytest.raises(ValueError, match="FLOWER_BASIC_AUTH"):
            check_flower_auth(address, auth)


def test_flower_refuses_a_public_address_without_auth(environment: dict[str, str]) -> None:  # noqa: F811
    env = {k: v for k, v in environment.items() if k != "FLOWER_BASIC_AUTH"}
    result = heartseg(env, "flower", "--address", "0.0.0.0", "--port", str(free_port()), timeout=60)
    assert result.returncode == 2 and "needs FLOWER_BASIC_AUTH" in result.stderr


def test_flower_and_worker_metrics_after_a_run(environment: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    write_cohort(tmp_path / "cohort", 2, seed=41)
    flower_port, gpu_port, cpu_port = free_port(), free_port(), free_port()
    cli = [sys.executable, "-m", "scheduler.cli"]
    flower_env = {**environment, "FLOWER_BASIC_AUTH": f"{AUTH[0]}:{AUTH[1]}"}
    with started([*cli, "flower", "--port", str(flower_port)], flower_env, tmp_path / "flower.log"), \
            started([*cli, "worker", "gpu", "--devices", "cpu"],
                    {**environment, "HEARTSEG_METRICS_PORT": str(gpu_port)}, tmp_path / "gpu.log"), \
            started([*cli, "worker", "cpu", "--concurrency", "2"],
                    {**environment, "HEARTSEG_METRICS_PORT": str(cpu_port)}, tmp_path / "cpu.log"):
        flower = f"http://127.0.0.1:{flower_port}"
        wait_for(f"{flower}/healthcheck")  # answers without credentials, as /metrics does (README)
        assert requests.get(f"{flower}/metrics", timeout=10).status_code == 200
        assert requests.get(f"{flower}/api/workers", timeout=10).status_code == 401
        assert requests.get(f"{flower}/api/workers", auth=(AUTH[0], "wrong"), timeout=10).status_code == 401
        deadline = time.monotonic() + 90
        while True:  # the workers answer Flower's broadcast once they are up
            workers = requests.get(f"{flower}/api/workers", params={"refresh": "1"}, auth=AUTH, timeout=30)
            assert workers.status_code == 200
            names = set(workers.json())
            if any(n.startswith("gpucpu@") for n in names) and any(n.startswith("cpu@") for n in names):
                break
            assert time.monotonic() < deadline, f"Flower lists {names}"
            time.sleep(1)

        submitted = heartseg(environment, "submit", str(tmp_path / "cohort"), "--run", "watched")
        assert submitted.returncode == 0, submitted.stderr
        status = heartseg(environment, "status", "watched", "--wait", "--poll", "1", timeout=600)
        assert status.returncode == 0, status.stdout + status.stderr

        gpu = samples(wait_for(f"http://127.0.0.1:{gpu_port}/metrics").text)
        cpu = samples(wait_for(f"http://127.0.0.1:{cpu_port}/metrics").text)
        assert ("heartseg_studies_total", {"run": "watched", "outcome": "segmented"}, 2.0) in gpu
        assert ("heartseg_frames_segmented_total", {"run": "watched"}, 4.0) in gpu  # ED and ES of 2 studies
        stage_counts = {labels["stage"]: value for name, labels, value in gpu if name == "heartseg_stage_seconds_count"}
        assert stage_counts == {"load": 2.0, "preprocess": 4.0, "forward": 4.0, "export": 4.0, "device_wait": 4.0,
                                "write": 2.0}
        assert ("heartseg_studies_total", {"run": "watched", "outcome": "done"}, 2.0) in cpu  # summed over the pool
        assert {labels["stage"] for name, labels, _ in cpu if name == "heartseg_stage_seconds_count"} == {"metrics"}

        deadline = time.monotonic() + 30
        while True:  # Flower counts the events it received from the workers
            flower_metrics = samples(requests.get(f"{flower}/metrics", auth=AUTH, timeout=10).text)
            succeeded = {labels["task"]: value for name, labels, value in flower_metrics
                         if name == "flower_events_total" and labels.get("type") == "task-succeeded"}
            if succeeded.get("heartseg.segment_study") == 2.0 and succeeded.get("heartseg.evaluate_study") == 2.0:
                break
            assert time.monotonic() < deadline, f"Flower saw {succeeded}"
            time.sleep(1)
        sent = {labels["task"] for name, labels, _ in flower_metrics
                if name == "flower_events_total" and labels.get("type") == "task-sent"}
        assert "heartseg.evaluate_study" in sent  # the sent event reaches Flower too


def test_json_log_lines_carry_run_and_study() -> None:
    import io
    import json
    import logging

    from heartseg.logs import ContextFilter, log_context, make_formatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter("json"))
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("heartseg.test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with log_context(run="cohort-a", study_id=42):
            logger.info("segmented %d frames", 20)
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["message"] == "segmented 20 frames" and inside["level"] == "INFO"
    assert (inside["run"], inside["study_id"]) == ("cohort-a", 42)
    assert (outside["run"], outside["study_id"]) == (None, None) and outside["logger"] == "heartseg.test.json"
