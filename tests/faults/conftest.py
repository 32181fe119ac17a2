"""Fixtures of the fault scenarios: the tiny cohort (written once), each scenario's own Redis server and record,
a PostgreSQL cluster the tests may stop (created once), a warm pool of workers shared by the scenarios that
neither kill workers nor restart servers, and the scenario harness, whose processes are always killed at the end.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_ADMIN_URL, new_database
from tests.faults.cohort import write_small_cohort
from tests.faults.harness import Scenario
from tests.faults.servers import PG_BIN, REDIS_SERVER, PostgresCluster, RedisServer

OpenScenario = Callable[..., Scenario]
MakeRedis = Callable[..., RedisServer]


def require(ok: bool, what: str) -> None:
    """Skip the test when ``what`` is missing here; fail it in CI, where it must be."""
    if not ok:
        message = f"the fault scenarios need {what}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small phantoms in ACDC layout (``phantom001``, ``phantom002``), written once and only read."""
    folder = tmp_path_factory.mktemp("faults-cohort")
    write_small_cohort(folder, 2)
    return folder


@pytest.fixture
def own_cohort(cohort: Path, tmp_path: Path) -> Path:
    """A copy of :func:`cohort` at paths of the test's own: on the shared record of :func:`pool`, a submit of the same
    folders would find the studies done by an earlier run and skip them."""
    return Path(shutil.copytree(cohort, tmp_path / "cohort"))


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[MakeRedis]:
    """Start a redis-server of the test's own (``persistent=True``: AOF), stopped at the end."""
    require(Path(REDIS_SERVER).is_file(), REDIS_SERVER)
    servers: list[RedisServer] = []

    def make(persistent: bool = False) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", persistent=persistent)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def redis_server(make_redis: MakeRedis) -> RedisServer:
    """A redis-server without persistence, of this test only."""
    return make_redis()


@pytest.fixture
def open_scenario(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenScenario]:
    """Open the test's scenario; by default on a new database of the shared PostgreSQL server, a Redis server of
    the test's own and a results folder in ``tmp_path``. Every worker it started is killed at the end."""
    opened: list[Scenario] = []

    def open_(name: str, *, database_url: str | None = None, broker: RedisServer | None = None,
              results_uri: str | None = None, **extra_env: str) -> Scenario:
        scenario = Scenario(
            name, tmp_path / "scenario",
            database_url=database_url or request.getfixturevalue("postgres_url"),
            broker=broker or request.getfixturevalue("redis_server"),
            results_uri=results_uri or str(tmp_path / "results"), extra_env=extra_env)
        opened.append(scenario)
        return scenario

    yield open_
    for scenario in opened:
        scenario.close()


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """A segmentation worker and a metrics worker, warm, on a record, Redis server and results folder of their own,
    shared by the scenarios that neither kill workers nor restart servers (each uses :meth:`Scenario.reuse` and a
    run of its own). Its results folder is ``<folder>/store/results``, so that a test can take ``store`` away."""
    require(Path(REDIS_SERVER).is_file(), REDIS_SERVER)
    folder = tmp_path_factory.mktemp("faults-pool")
    broker = RedisServer(folder / "redis")
    broker.start()
    try:
        with new_database(POSTGRES_ADMIN_URL, "heartseg_faults") as database_url:
            scenario = Scenario("pool", folder / "scenario", database_url=database_url, broker=broker,
                                results_uri=str(folder / "store" / "results"))
            try:
                for worker in (scenario.start_gpu_worker("pool"), scenario.start_cpu_worker("pool")):
                    worker.wait_ready()
                yield scenario
            finally:
                scenario.close()
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of the fault tests' own (initdb once per session), which a test may stop and start."""
    require((PG_BIN / "initdb").is_file(), f"PostgreSQL's initdb and pg_ctl in {PG_BIN}")
    require(os.geteuid() == 0 and shutil.which("runuser") is not None, "root and runuser (to run as postgres)")
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def cluster_database(pg_cluster: PostgresCluster) -> Iterator[str]:
    """URL of a new database on :func:`pg_cluster` (started again first if a test left it stopped)."""
    if not pg_cluster.running():
        pg_cluster.start()
    with new_database(pg_cluster.url(), "heartseg_faults") as url:
        yield url
        if not pg_cluster.running():
            pg_cluster.start()
