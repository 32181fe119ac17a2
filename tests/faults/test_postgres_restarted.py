"""PostgreSQL stopped and started mid-run (every connection dropped): the workers retry their record writes
with backoff, give their studies back uncounted, and the run finishes with one row per key and no try used.
The lease (15 s) outlasts the outage, so that no study is re-queued as lost meanwhile."""

from __future__ import annotations

import time
from pathlib import Path

from tests.faults.conftest import OpenScenario
from tests.faults.servers import PostgresCluster

RUN = "postgres-restarted"
#: How long PostgreSQL stays down.
DOWN_S = 3.0


def test_postgres_restarted_mid_run(open_scenario: OpenScenario, pg_cluster: PostgresCluster,
                                    cluster_database: str, cohort: Path) -> None:
    scenario = open_scenario("PostgreSQL stopped and started mid-run", database_url=cluster_database,
                             HEARTSEG_LEASE_S="15")
    scenario.start_gpu_worker("gpu")
    scenario.start_cpu_worker()
    scenario.submit(cohort, RUN)
    scenario.wait_for_status(RUN, "running")
    pg_cluster.stop("fast")
    scenario.fault("pg_ctl stop -m fast")
    time.sleep(DOWN_S)
    pg_cluster.start()

    scenario.conclude(RUN, 2)
    assert [study.attempts for study in scenario.studies(RUN)] == [1, 1], scenario.diagnosis(RUN)
