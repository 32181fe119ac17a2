"""One fault scenario on real servers: its settings, its worker processes, the record's view of its run, and the
checks every scenario ends with.

A scenario never runs ``heartseg status``: the system must heal by itself (the workers' reconciler), so the
scenario only watches the record, with a deadline, and prints the workers' logs when the deadline passes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from db.session import open_record
from scheduler.worker_launcher import cpu_worker_command, gpu_worker_commands
from tests.faults.servers import RedisServer

#: Short leases and timeouts, so that healing takes seconds. Each is a setting the workers read (HEARTSEG_*).
FAST_SETTINGS = {
    "HEARTSEG_USE_MIRRORING": "false",
    "HEARTSEG_LEASE_S": "6",
    "HEARTSEG_RECONCILE_S": "1",
    "HEARTSEG_STALL_S": "5",
    "HEARTSEG_MAX_ATTEMPTS": "3",
    "HEARTSEG_LOG_FORMAT": "text",
}
#: How long a scenario waits for its run to finish (seconds); normally it takes far less.
DEADLINE_S = float(os.environ.get("HEARTSEG_FAULTS_DEADLINE_S", "240"))
#: Where each scenario's numbers are appended as one JSON line, when set.
REPORT_ENV = "HEARTSEG_FAULTS_REPORT"
FINISHED = ("done", "failed")
#: Rows one done study has with ``--frames ed-es`` and references at ED and ES.
ROWS_PER_DONE_STUDY = {"masks": 2, "metrics": 6, "cardiac_indices": 2}
#: Each result table and the columns of its key: one row per key, whatever happened.
KEYS = {
    "masks": "study_id, model_id, frame",
    "metrics": "study_id, model_id, frame, structure",
    "cardiac_indices": "study_id, model_id, source",
}


@dataclass
class Worker:
    """A Celery worker process this scenario started (its own session, so that it can be signalled as a group)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        """Whether its main process still runs."""
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to its whole process group (main process and pool children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the group and reap the main process."""
        self.signal(signal.SIGKILL)
        self.proc.wait(30)

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until Celery logs that the worker is ready (consuming)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if f"{self.name} ready." in self.log.read_text(errors="replace"):
                return
            assert self.alive(), f"{self.name} exited ({self.proc.returncode}):\n{tail(self.log)}"
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready after {timeout:g} s:\n{tail(self.log)}")


@dataclass(frozen=True)
class StudyRow:
    """A study as the record shows it."""

    id: int
    patient_id: str
    status: str
    attempts: int
    worker: str | None
    error: str | None


@dataclass
class Outcome:
    """What a scenario showed: the numbers quoted in the reliability notes."""

    scenario: str
    run: str
    done: int
    failed: int
    left: dict[str, int]
    """Studies in any other state (queued, running, segmented): none when healed."""
    duplicates: dict[str, int]
    """Keys with more than one row, per result table."""
    heal_s: float | None
    """Seconds from the fault to the run being finished."""
    total_s: float
    """Seconds from the submit to the run being finished."""
    details: dict[str, object] = field(default_factory=dict)


def queue_keys(client: redis.Redis, queue: str) -> list[bytes | str]:
    """The Redis lists of a kombu queue: ``queue`` and its priority lists (``queue\\x06\\x16<n>``)."""
    return [queue.encode(), *client.keys(f"{queue}\x06\x16*")]


def queued(client: redis.Redis, queue: str) -> int:
    """Messages waiting in a queue (not yet delivered to a worker)."""
    return sum(int(client.llen(key)) for key in queue_keys(client, queue))


def drop_queue(client: redis.Redis, queue: str) -> int:
    """Delete a queue's waiting messages, as a broker that loses them would; how many there were."""
    lost = queued(client, queue)
    client.delete(*queue_keys(client, queue))
    return lost


def unacked_on(client: redis.Redis, queue: str) -> int:
    """Messages of ``queue`` delivered to a worker and not yet acknowledged (kombu's ``unacked`` hash)."""
    entries = client.hvals("unacked")
    return sum(json.loads(entry)[2] == queue for entry in entries)


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file."""
    if not path.exists():
        return f"({path.name}: no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Scenario:
    """The run of one fault scenario: environment, workers, record, timing and the final checks."""

    def __init__(self, name: str, folder: Path, *, database_url: str, broker: RedisServer, results_uri: str,
                 extra_env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.broker = broker
        self.folder = folder
        self.logs = folder / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **FAST_SETTINGS, "HEARTSEG_DATABASE_URL": database_url,
                    "HEARTSEG_BROKER_URL": broker.url(), "HEARTSEG_RESULTS_URI": results_uri,
                    "HEARTSEG_CACHE_DIR": str(folder / "cache"), "COLUMNS": "200", **(extra_env or {})}
        self.engine: Engine = open_record(database_url)  # migrated once here, before any worker or submit
        self.workers: list[Worker] = []
        self.started = time.monotonic()
        self.fault_at: float | None = None

    # --- processes ---

    def start_gpu_worker(self, host: str, in_flight: int = 2) -> Worker:
        """A segmentation worker on the CPU (``gpucpu@<host>``) holding up to ``in_flight`` studies."""
        argv, extra = gpu_worker_commands(["cpu"], hostname=host, studies_in_flight=in_flight)[0]
        return self._start(f"gpucpu@{host}", argv, {**extra, "HEARTSEG_STUDIES_IN_FLIGHT": str(in_flight)})

    def start_cpu_worker(self, host: str = "metrics", concurrency: int = 1) -> Worker:
        """A metrics worker (``cpu@<host>``)."""
        argv, extra = cpu_worker_command(concurrency, hostname=host)
        return self._start(f"cpu@{host}", argv, extra)

    def _start(self, name: str, argv: list[str], extra: Mapping[str, str]) -> Worker:
        argv = [*argv, "--without-mingle"]  # no one-second wait for the other workers' replies at start
        log = self.logs / f"{name.replace('@', '-')}-{len(self.workers)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env={**self.env, **extra}, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        worker = Worker(name, proc, log)
        self.workers.append(worker)
        return worker

    def heartseg(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a ``heartseg`` command (``python -m scheduler.cli``) in this scenario's environment."""
        return subprocess.run([sys.executable, "-m", "scheduler.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def submit(self, cohort: Path, run: str) -> None:
        """``heartseg submit COHORT --run RUN --frames ed-es``; starts the scenario's clock."""
        self.started = time.monotonic()
        done = self.heartseg("submit", str(cohort), "--run", run, "--frames", "ed-es")
        assert done.returncode == 0, f"submit failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"

    def submit_process(self, cohort: Path, run: str) -> subprocess.Popen[str]:
        """The same submit, started and not waited for."""
        return subprocess.Popen([sys.executable, "-m", "scheduler.cli", "submit", str(cohort), "--run", run,
                                 "--frames", "ed-es"], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def fault(self, what: str) -> None:
        """Note the moment of the fault (the clock of the time to heal)."""
        self.fault_at = time.monotonic()
        print(f"[{self.name}] fault at {self.fault_at - self.started:.1f} s: {what}", flush=True)

    def reuse(self, name: str) -> Scenario:
        """Another scenario on the same servers, record and (still running) workers; its clock starts now."""
        other = copy.copy(self)
        other.name, other.started, other.fault_at = name, time.monotonic(), None
        return other

    def close(self) -> None:
        """Kill every worker still running and release the record's connections."""
        for worker in self.workers:
            if worker.alive():
                worker.kill()
        self.engine.dispose()

    # --- the record ---

    def studies(self, run: str) -> list[StudyRow]:
        """The run's studies, or ``[]`` while the record cannot be reached."""
        query = text("SELECT s.id, s.patient_id, s.status, s.attempts, s.worker, s.error FROM studies s "
                     "JOIN runs r ON r.id = s.run_id WHERE r.name = :run ORDER BY s.id")
        try:
            with self.engine.connect() as connection:
                return [StudyRow(*row) for row in connection.execute(query, {"run": run})]
        except DBAPIError:
            return []

    def wait_until(self, check: Callable[[], bool], what: str, run: str, timeout: float = DEADLINE_S,
                   poll_s: float = 0.2) -> float:
        """Poll ``check`` until true; the seconds it took. On timeout, fail with the run and the workers' logs."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if check():
                return time.monotonic() - started
            time.sleep(poll_s)
        raise AssertionError(f"[{self.name}] {what}: not after {timeout:g} s\n{self.diagnosis(run)}")

    def wait_for_status(self, run: str, status: str, count: int = 1, worker: str | None = None) -> list[StudyRow]:
        """Wait until ``count`` studies of ``run`` are in ``status`` (held by ``worker``, when named); those."""
        def matching() -> list[StudyRow]:
            return [s for s in self.studies(run)
                    if s.status == status and (worker is None or (s.worker or "").startswith(worker))]

        self.wait_until(lambda: len(matching()) >= count, f"{count} studies {status}"
                        f"{f' by {worker}' if worker else ''}", run)
        return matching()

    def wait_finished(self, run: str, n_studies: int) -> None:
        """Wait until each of the run's ``n_studies`` studies is done or failed."""
        def finished() -> bool:
            rows = self.studies(run)
            return len(rows) == n_studies and all(s.status in FINISHED for s in rows)

        self.wait_until(finished, "every study done or failed", run)

    def duplicates(self, run: str) -> dict[str, int]:
        """Per result table, the keys holding more than one row (``GROUP BY key HAVING count(*) > 1``)."""
        found = {}
        with self.engine.connect() as connection:
            for table, key in KEYS.items():
                query = text(f"SELECT {key}, count(*) FROM {table} WHERE study_id IN "
                             "(SELECT s.id FROM studies s JOIN runs r ON r.id = s.run_id WHERE r.name = :run) "
                             f"GROUP BY {key} HAVING count(*) > 1")
                found[table] = len(connection.execute(query, {"run": run}).all())
        return found

    def rows_per_study(self, run: str) -> dict[str, dict[int, int]]:
        """Per result table, the number of rows of each of the run's studies."""
        counts: dict[str, dict[int, int]] = {}
        with self.engine.connect() as connection:
            for table in KEYS:
                query = text(f"SELECT t.study_id, count(*) FROM {table} t JOIN studies s ON s.id = t.study_id "
                             "JOIN runs r ON r.id = s.run_id WHERE r.name = :run GROUP BY t.study_id")
                counts[table] = {study: n for study, n in connection.execute(query, {"run": run})}
        return counts

    def heartbeats(self) -> list[str]:
        """The workers' heartbeat rows (``workers`` table), as text; ``[]`` while the record cannot be read."""
        query = text("SELECT name, queue, started_at, last_seen_at, last_error FROM workers ORDER BY name")
        try:
            with self.engine.connect() as connection:
                return [" ".join(map(str, row)) for row in connection.execute(query)]
        except DBAPIError:
            return []

    def diagnosis(self, run: str) -> str:
        """The run's studies, the workers' heartbeats and the tail of every worker's log, for a failure message."""
        lines = ["studies:"] + [f"  {s}" for s in self.studies(run)]
        lines += ["worker heartbeats:"] + [f"  {h}" for h in self.heartbeats()]
        for worker in self.workers:
            state = "running" if worker.alive() else f"exited {worker.proc.returncode}"
            lines += [f"--- {worker.name} ({state}) {worker.log} ---", tail(worker.log)]
        return "\n".join(lines)

    # --- the end of every scenario ---

    def conclude(self, run: str, n_studies: int, *, failed: Iterable[str] = (), **details: object) -> Outcome:
        """Wait for the run to finish, then check what every scenario must end with, and report its numbers.

        Every study is ``done`` except those named in ``failed`` (patient names), which are ``failed`` with a
        reason; each key of masks, metrics and cardiac indices has one row; a done study has all its rows.
        """
        self.wait_finished(run, n_studies)
        finished = time.monotonic()
        rows = self.studies(run)
        outcome = Outcome(
            scenario=self.name, run=run,
            done=sum(s.status == "done" for s in rows), failed=sum(s.status == "failed" for s in rows),
            left={st: sum(s.status == st for s in rows) for st in {s.status for s in rows} - set(FINISHED)},
            duplicates=self.duplicates(run),
            heal_s=None if self.fault_at is None else round(finished - self.fault_at, 1),
            total_s=round(finished - self.started, 1),
            details={"attempts": {s.patient_id: s.attempts for s in rows}, **details},
        )
        write_report(outcome)
        expected_failed = set(failed)
        assert outcome.left == {}, self.diagnosis(run)
        assert outcome.duplicates == dict.fromkeys(KEYS, 0), f"duplicate rows {outcome.duplicates}"
        for study in rows:
            expected = "failed" if study.patient_id in expected_failed else "done"
            assert study.status == expected, f"{study} should be {expected}\n{self.diagnosis(run)}"
            if study.status == "failed":
                assert study.error, f"{study} failed without a reason"
        per_study = self.rows_per_study(run)
        for table, expected_rows in ROWS_PER_DONE_STUDY.items():
            for study in rows:
                if study.status == "done":
                    assert per_study[table].get(study.id) == expected_rows, (table, study, per_study[table])
        return outcome


def write_report(outcome: Outcome) -> None:
    """Append the outcome as one JSON line to ``$HEARTSEG_FAULTS_REPORT``, when it is set."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    with Path(path).open("a", encoding="utf-8") as report:
        report.write(json.dumps(asdict(outcome), sort_keys=True) + "\n")
