"""Redis restarted mid-run (crashed, then started on the same port): with AOF it keeps its messages; without
persistence the queued and unacknowledged messages are gone, and the record heals the run: the reconciler sends
the messages of studies that made no progress again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.conftest import MakeRedis, OpenScenario
from tests.faults.harness import queued

#: How long Redis stays down.
DOWN_S = 2.0


@pytest.mark.parametrize("persistent", [True, False], ids=["aof", "no-persistence"])
def test_redis_restarted_mid_run(persistent: bool, make_redis: MakeRedis, open_scenario: OpenScenario,
                                 cohort: Path) -> None:
    broker = make_redis(persistent=persistent)
    kind = "with AOF" if persistent else "without persistence"
    run = f"redis-restarted-{'aof' if persistent else 'volatile'}"
    scenario = open_scenario(f"Redis restarted mid-run {kind}", broker=broker)
    scenario.start_gpu_worker("gpu", in_flight=1)  # one study at a time: the others wait in Redis
    scenario.start_cpu_worker()
    scenario.submit(cohort, run)
    scenario.wait_for_status(run, "running")
    waiting = queued(broker.client(), "gpu")
    broker.crash()
    scenario.fault(f"redis-server killed ({kind}) with {waiting} segment messages queued")
    time.sleep(DOWN_S)
    broker.start()
    kept = queued(broker.client(), "gpu")  # AOF: the waiting messages; else none

    scenario.conclude(run, 2, queued_at_crash=waiting, queued_after_restart=kept)
