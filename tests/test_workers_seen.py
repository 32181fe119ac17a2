"""Workers that are seen: ``status`` lists the live workers per queue and says what is wrong in red; ``heartseg
run`` stops with a worker's start error (exit 2) and stops its workers on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from db.schema import Worker
from db.session import make_engine
from heartseg.settings import PROJECT_ROOT
from scheduler.progress import workers_view
from tests.phantom_cache import write_cohort


def worker(name: str, queue: str, error: str | None = None, device: str | None = None) -> Worker:
    moment = datetime.now(UTC)
    return Worker(name=name, queue=queue, device=device, model_fingerprint="1b8350e2ffc316c6" + "0" * 48,
                  version="0.1.0", host="h", pid=1, started_at=moment, last_seen_at=moment, last_error=error)


def test_the_view_lists_workers_per_queue_and_names_what_is_wrong() -> None:
    view = workers_view([worker("gpu0@h", "gpu", device="cuda:0 (NVIDIA H100)"), worker("cpu@h", "cpu")],
                        {"queued": 3, "segmented": 1})
    assert view.summary == ("workers: gpu 1 (gpu0@h on cuda:0 (NVIDIA H100) model 1b8350e2); "
                            "cpu 1 (cpu@h model 1b8350e2)")
    assert view.problems == ()
    failed = workers_view([worker("gpu0@h", "gpu", error="start failed: HEARTSEG_DEVICE=cuda but torch finds no "
                                  "CUDA device"), worker("cpu@h", "cpu")], {"queued": 3})
    assert failed.summary.startswith("workers: gpu 0; cpu 1")
    assert failed.problems == ("worker gpu0@h: start failed: HEARTSEG_DEVICE=cuda but torch finds no CUDA device",
                               "no live worker on queue gpu (3 studies wait for one)")
    assert workers_view([], {"segmented": 2}).problems == ("no live worker on queue cpu (2 studies wait for one)",)
    assert workers_view([], {"done": 2}).problems == ()  # nothing waits: no worker is needed
    assert workers_view([], {"queued": 2}, starting=True).problems == ()


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTSEG_")}
    env.update({"HEARTSEG_USE_MIRRORING": "false", "COLUMNS": "300",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))})
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def test_run_stops_with_the_error_of_a_worker_that_cannot_start(tmp_path: Path) -> None:
    import torch

    assert not torch.cuda.is_available(), "this test needs a host without CUDA"
    write_cohort(tmp_path / "cohort", 1, seed=21)
    result = subprocess.run([sys.executable, "-m", "scheduler.cli", "run", str(tmp_path / "cohort"), "-o",
                             str(tmp_path / "out"), "--devices", "0"], env=environment(), cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: worker gpu0@local exited with status 2: start failed: HEARTSEG_DEVICE=cuda but "
                           "torch"), result.stderr
    assert "finds no CUDA device" in last and "Traceback" not in result.stderr


def test_sigterm_stops_run_and_its_workers(tmp_path: Path) -> None:
    write_cohort(tmp_path / "cohort", 2, seed=22)
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "run", str(tmp_path / "cohort"), "-o", str(out),
                            "--frames", "ed-es", "--devices", "cpu"], env=environment(), cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    engine = make_engine(f"sqlite:///{out / 'record.db'}")
    try:
        deadline = time.monotonic() + 240
        pids: list[int] = []
        while time.monotonic() < deadline and len(pids) < 2:  # both workers have beaten
            time.sleep(0.5)
            if (out / "record.db").exists():
                try:
                    with engine.connect() as connection:
                        pids = list(connection.execute(select(Worker.pid)).scalars())
                except Exception:  # the record is being created or migrated
                    continue
        assert len(pids) == 2, "the workers never showed up in the record"
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=180)
        assert run.returncode == 128 + signal.SIGTERM, stderr
        assert "stopping: the workers finish or give back their studies" in stderr
        alive = [pid for pid in pids if _alive(pid)]
        assert alive == [], f"workers still running after heartseg run stopped: {alive}"
    finally:
        if run.poll() is None:
            run.kill()
        engine.dispose()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_worker_refuses_to_start_on_a_record_behind_its_schema(postgres_url: str, tmp_path: Path) -> None:
    from db.migrate import head_revision, upgrade
    from scheduler.worker_launcher import cpu_worker_command

    engine = make_engine(postgres_url)
    upgrade(engine, "0006")
    engine.dispose()
    argv, extra = cpu_worker_command(1, hostname="behind")
    env = {**environment(), **extra, "HEARTSEG_DATABASE_URL": postgres_url,
           "HEARTSEG_EMBEDDED_BROKER_DIR": str(tmp_path / "broker")}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    where = make_engine(postgres_url).url.render_as_string(hide_password=True)
    assert (f"worker cpu@behind cannot start: the record at {where} is at revision 0006 and this HeartSeg needs "
            f"{head_revision()}: back it up and run `heartseg db upgrade`") in result.stdout + result.stderr
