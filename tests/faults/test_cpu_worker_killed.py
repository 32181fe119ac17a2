"""The metrics worker SIGKILLed while it evaluates a study: the message stays unacknowledged in Redis (for the
visibility timeout, hours), so the reconciler sends the evaluation of the stalled ``segmented`` study again and
the restarted worker finishes it; its metrics and indices are recorded once."""

from __future__ import annotations

from pathlib import Path

from tests.faults.conftest import OpenScenario
from tests.faults.harness import unacked_on

RUN = "cpu-worker-killed"


def test_metrics_worker_killed_mid_task(open_scenario: OpenScenario, cohort: Path) -> None:
    scenario = open_scenario("metrics worker SIGKILLed mid-task")
    scenario.start_gpu_worker("gpu")
    scenario.submit(cohort, RUN)
    scenario.wait_for_status(RUN, "segmented", count=2)  # both evaluations wait in the cpu queue
    broker = scenario.broker.client()
    first = scenario.start_cpu_worker("first")
    scenario.wait_until(lambda: unacked_on(broker, "cpu") > 0, "the metrics worker took an evaluation", RUN,
                        poll_s=0.005)
    first.kill()
    scenario.fault(f"SIGKILL {first.name}")
    unfinished = sum(s.status == "segmented" for s in scenario.studies(RUN))
    assert unfinished, "both evaluations were done before the kill"
    scenario.start_cpu_worker("second")

    scenario.conclude(RUN, 2, unfinished_at_kill=unfinished)
