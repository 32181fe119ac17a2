"""Servers that a fault scenario owns and stops or restarts: Redis, a PostgreSQL cluster, an S3 endpoint (moto).

Each listens on a free loopback port that stays the same across restarts, so the workers reconnect to it;
each keeps its files in a folder of its own and is stopped by its fixture's finalizer.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import redis

from tests.conftest import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _postgres_bin() -> Path:
    """The folder of the newest installed PostgreSQL server's programs (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _postgres_bin()


def wait_for(check: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Call ``check()`` until it returns true (exceptions count as false); AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # a server that is still starting refuses or resets connections
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what}: not ready after {timeout:g} s")


class RedisServer:
    """A redis-server of its own on a free port, in ``folder``; with or without persistence (AOF).

    ``persistent``: ``--appendonly yes --appendfsync always`` (every write is on disk before Redis answers, so a
    crash loses nothing); else ``--save "" --appendonly no`` (a restart starts empty).
    """

    def __init__(self, folder: Path, *, persistent: bool = False) -> None:
        self.folder = folder
        self.persistent = persistent
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def url(self, db: int = 0) -> str:
        """The broker URL of database ``db``."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        """A client of database ``db``."""
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=5)

    def start(self) -> None:
        """Start it (again) on the same port and folder; returns once it answers PING."""
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
                       else ["--appendonly", "no"])
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--save", "", *persistence, "--daemonize", "no"]
        self._log = (self.folder / "redis.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        client = self.client()
        wait_for(lambda: client.ping(), f"redis-server on port {self.port}")
        client.close()

    def crash(self) -> None:
        """SIGKILL: what was not on disk is gone."""
        self._stop(signal.SIGKILL)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL)."""
        self._stop(signal.SIGTERM)

    def _stop(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None


class PostgresCluster:
    """A PostgreSQL 15 cluster of its own (initdb, trust auth) that a test can stop and start with pg_ctl.

    It runs as the ``postgres`` OS user in a folder under the system temporary directory (pytest's folders are
    private to root), listens on 127.0.0.1 at a free port and keeps its unix socket in that folder.
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="heartseg-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(PG_BIN / "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                          "-E", "UTF8")

    def _as_postgres(self, *argv: str | Path, timeout: float = 60) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *map(str, argv)], check=True, capture_output=True,
                       timeout=timeout)

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` on this cluster."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """pg_ctl start, returning once it accepts connections."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                   "-c fsync=off -c full_page_writes=off")
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "-t", "60",
                          "start", timeout=90)

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop (``fast``: disconnect every client and shut down cleanly; ``immediate``: like a crash)."""
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop", timeout=90)

    def running(self) -> bool:
        """Whether the postmaster runs."""
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        """Stop it if it runs and delete its folder."""
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class MotoS3:
    """moto's S3 served over HTTP from a thread of the test process, stoppable and restartable on one port.

    Its buckets and objects live in moto's in-process backend, so they survive a stop and start: the
    endpoint goes away (connections are refused) and comes back with its data, like a storage outage.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self._server: object | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The endpoint URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve on the port (again)."""
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        server = make_server("127.0.0.1", self.port, DomainDispatcherApplication(create_backend_app), threaded=True,
                             request_handler=MotoRequestHandler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True, name="moto-s3")
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket, so that clients are refused."""
        from werkzeug.serving import BaseWSGIServer

        if isinstance(self._server, BaseWSGIServer):
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None
