"""A GPU worker killed with SIGKILL mid-study: the study is taken up again and recorded once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis
from sqlalchemy import Engine, func, select

from db.schema import Mask, Study
from db.session import make_engine, session_scope
from heartseg.enums import StudyStatus
from heartseg.phantom import draw_parameters, write_patient
from scheduler.worker_launcher import cpu_worker_command, gpu_worker_commands


def start(argv_env: tuple[list[str], dict[str, str]], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    argv, extra = argv_env
    return subprocess.Popen(argv, env={**env, **extra}, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def clean_up(procs: list[subprocess.Popen[bytes]], engine: Engine, broker: redis.Redis) -> None:
    """Kill what still runs, close the record, empty the test's Redis database."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    engine.dispose()
    broker.flushdb()


def test_killed_worker_leaves_its_study_to_be_done_again_once(postgres_url: str, tmp_path: Path) -> None:
    import numpy as np

    params = draw_parameters("phantom001", np.random.default_rng(8))
    write_patient(tmp_path / "cohort" / "phantom001", params)
    db = int(uuid.uuid4().int % 5) + 10
    broker = redis.Redis(host="127.0.0.1", port=6379, db=db)
    broker.flushdb()
    env = {**os.environ, "HEARTSEG_DATABASE_URL": postgres_url, "HEARTSEG_BROKER_URL": f"redis://127.0.0.1:6379/{db}",
           "HEARTSEG_RESULTS_URI": str(tmp_path / "results"), "HEARTSEG_USE_MIRRORING": "false",
           "HEARTSEG_LEASE_S": "8"}
    submitted = subprocess.run([sys.executable, "-m", "scheduler.cli", "submit", str(tmp_path / "cohort"),
                                "--run", "kill", "--frames", "all"], env=env, capture_output=True, text=True,
                               timeout=120, check=False)
    assert submitted.returncode == 0, submitted.stderr
    engine = make_engine(postgres_url)
    procs = [start(gpu_worker_commands(["cpu"], hostname="first")[0], env, tmp_path / "first.log"),
             start(cpu_worker_command(1), env, tmp_path / "cpu.log")]
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # wait until the first worker is inside the study
            with session_scope(engine) as session:
                study = session.execute(select(Study)).scalar_one()
                n_masks = session.execute(select(func.count()).select_from(Mask)).scalar_one()
            if study.status == StudyStatus.RUNNING:
                break
            time.sleep(0.2)
        assert study.status == StudyStatus.RUNNING and study.worker.startswith("gpucpu@first")
        time.sleep(3)
        os.killpg(procs[0].pid, signal.SIGKILL)
        procs[0].wait(30)
        with session_scope(engine) as session:
            assert session.execute(select(Study.status)).scalar_one() == StudyStatus.RUNNING  # the lease holds
        procs.append(start(gpu_worker_commands(["cpu"], hostname="second")[0], env, tmp_path / "second.log"))
        status = subprocess.run([sys.executable, "-m", "scheduler.cli", "status", "kill", "--wait", "--poll", "1"],
                                env=env, capture_output=True, text=True, timeout=600, check=False)
        assert status.returncode == 0, status.stdout + status.stderr
        with session_scope(engine) as session:
            study = session.execute(select(Study)).scalar_one()
            assert study.status == StudyStatus.DONE
            assert study.attempts == 2 and study.worker.startswith("gpucpu@second")
            masks = session.execute(select(Mask.frame)).scalars().all()
            assert sorted(masks) == list(range(1, params.n_frames + 1))  # every phase, once
        assert n_masks == 0  # masks are recorded only when the study is fully segmented
    finally:
        clean_up(procs, engine, broker)


def test_worker_killed_with_a_prefetched_study_loses_nothing(postgres_url: str, tmp_path: Path) -> None:
    """A segmentation worker holds two studies at once (one on the device, the next loading or waiting for it).
    Killed then, both come back with their leases and every study is recorded once: its masks, metrics and
    indices, one row per key."""
    import numpy as np

    from db.schema import CardiacIndex, Metric

    phases = {}
    for index in range(4):
        params = draw_parameters(f"phantom{index:03d}", np.random.default_rng(30 + index))
        write_patient(tmp_path / "cohort" / params.patient_id, params)
        phases[params.patient_id] = [1, params.es_frame]
    db = int(uuid.uuid4().int % 5) + 10
    broker = redis.Redis(host="127.0.0.1", port=6379, db=db)
    broker.flushdb()
    env = {**os.environ, "HEARTSEG_DATABASE_URL": postgres_url, "HEARTSEG_BROKER_URL": f"redis://127.0.0.1:6379/{db}",
           "HEARTSEG_RESULTS_URI": str(tmp_path / "results"), "HEARTSEG_USE_MIRRORING": "false",
           "HEARTSEG_LEASE_S": "8", "HEARTSEG_STUDIES_IN_FLIGHT": "2"}
    submitted = subprocess.run([sys.executable, "-m", "scheduler.cli", "submit", str(tmp_path / "cohort"),
                                "--run", "prefetch"], env=env, capture_output=True, text=True,
                               timeout=120, check=False)
    assert submitted.returncode == 0, submitted.stderr
    engine = make_engine(postgres_url)
    first = gpu_worker_commands(["cpu"], hostname="first", studies_in_flight=2)[0]
    assert first[0][first[0].index("--pool") + 1] == "threads" and "2" in first[0]
    procs = [start(first, env, tmp_path / "first.log"), start(cpu_worker_command(1), env, tmp_path / "cpu.log")]
    try:
        held: list[int] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(held) < 2:  # wait until the worker holds two studies
            with session_scope(engine) as session:
                held = list(session.execute(select(Study.id).where(
                    Study.status == StudyStatus.RUNNING, Study.worker.startswith("gpucpu@first"))).scalars())
            time.sleep(0.1)
        assert len(held) == 2, "the worker never held two studies at once"
        os.killpg(procs[0].pid, signal.SIGKILL)
        procs[0].wait(30)
        procs.append(start(gpu_worker_commands(["cpu"], hostname="second", studies_in_flight=2)[0], env,
                           tmp_path / "second.log"))
        status = subprocess.run([sys.executable, "-m", "scheduler.cli", "status", "prefetch", "--wait", "--poll",
                                 "1"], env=env, capture_output=True, text=True, timeout=600, check=False)
        assert status.returncode == 0, status.stdout + status.stderr
        with session_scope(engine) as session:
            studies = session.execute(select(Study)).scalars().all()
            assert [s.status for s in studies] == [StudyStatus.DONE] * 4
            for study in studies:  # the two held ones were taken up again by the second worker
                assert study.id not in held or (study.attempts >= 2 and study.worker.startswith("gpucpu@second"))
            for study in studies:
                frames = session.execute(select(Mask.frame).where(Mask.study_id == study.id)).scalars().all()
                assert sorted(frames) == phases[study.patient_id]  # ED and ES, once each
                metrics = session.execute(select(Metric.frame, Metric.structure)
                                          .where(Metric.study_id == study.id)).all()
                assert len(metrics) == len(set(metrics)) == 3 * 2  # 3 structures at ED and ES (the references)
                sources = session.execute(select(CardiacIndex.source)
                                          .where(CardiacIndex.study_id == study.id)).scalars().all()
                assert sorted(sources) == ["pred", "ref"]
    finally:
        clean_up(procs, engine, broker)
