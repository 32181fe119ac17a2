"""``heartseg run``: the whole flow on one host: start real Celery workers, submit, follow, stop.

With ``HEARTSEG_BROKER_URL`` unset the workers talk through kombu's filesystem transport and
the record is SQLite, so no server is needed; with it set, the same command uses Redis.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from db.schema import Worker
from db.session import make_engine, session_scope
from heartseg.errors import HeartSegError
from heartseg.settings import Settings
from scheduler.worker_launcher import cpu_worker_command, gpu_worker_commands


def run_folder_settings(settings: Settings, out: Path, keep_explicit: bool = False) -> Settings:
    """Embedded-mode settings with the record, broker, results and cache inside ``out``, no server.

    ``out/record.db`` (SQLite), ``out/broker`` (kombu's filesystem transport), ``out/results`` and
    ``out/cache``. With ``keep_explicit``, a setting given explicitly (in the environment) stays as given.
    """
    folder: dict[str, object] = {
        "database_url": f"sqlite:///{(out / 'record.db').resolve()}",
        "broker_url": None,
        "embedded_broker_dir": (out / "broker").resolve(),
        "results_uri": str((out / "results").resolve()),
        "cache_dir": (out / "cache").resolve(),
    }
    if keep_explicit:
        folder = {name: value for name, value in folder.items() if name not in settings.model_fields_set}
    return settings.model_copy(update=folder)


def settings_environment(settings: Settings) -> dict[str, str]:
    """The ``HEARTSEG_*`` variables that give child processes exactly these settings."""
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        env[f"HEARTSEG_{name.upper()}"] = value if isinstance(value, str) else _json(value)
    return env


def _json(value: object) -> str:
    import json

    return json.dumps(value)


class WorkerStartError(HeartSegError):
    """A worker of ``heartseg run`` stopped (its start failed): the run cannot go on."""


@dataclass
class LocalWorkers:
    """The worker processes ``heartseg run`` started, their names and logs."""

    settings: Settings
    procs: list[subprocess.Popen[bytes]]
    names: list[str]
    logs: list[Path]

    def check(self) -> None:
        """Raise :class:`WorkerStartError` with the reason when a worker has exited."""
        for proc, name, log in zip(self.procs, self.names, self.logs, strict=True):
            code = proc.poll()
            if code is not None:
                raise WorkerStartError(f"worker {name} exited with status {code}: {self._reason(name, log)} "
                                       f"(log: {log})")

    def _reason(self, name: str, log: Path) -> str:
        """The error the worker recorded, else the last line of its log."""
        try:
            engine = make_engine(self.settings.database_url)
            with session_scope(engine) as session:
                error = session.execute(select(Worker.last_error).where(Worker.name == name)).scalar()
            engine.dispose()
        except Exception:  # the record is what the worker could not reach, maybe
            error = None
        if error:
            return str(error)
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip() if lines else "no output"


@contextmanager
def local_workers(settings: Settings, log_dir: Path, gpu_devices: tuple[str, ...] = ("cpu",),
                  cpu_concurrency: int = 1) -> Iterator[LocalWorkers]:
    """Start one segmentation worker per device and one metrics worker; stop them (SIGTERM) on exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTSEG_")}
    env.update(settings_environment(settings))  # the children get exactly these settings
    commands = [*gpu_worker_commands(gpu_devices, hostname="local", studies_in_flight=settings.studies_in_flight),
                cpu_worker_command(cpu_concurrency, "local")]
    workers = LocalWorkers(settings, [], [], [])
    for index, (argv, extra) in enumerate(commands):
        path = log_dir / f"worker{index}.log"
        log = path.open("w")
        workers.procs.append(subprocess.Popen(argv, env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        workers.names.append(argv[argv.index("--hostname") + 1])
        workers.logs.append(path)
    try:
        yield workers
    finally:
        for proc in workers.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in workers.procs:
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
