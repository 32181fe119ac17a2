"""SIGTERM to a busy segmentation worker (Celery's warm shutdown, as an orchestrator stops a pod): it finishes
the studies it holds or gives them back, leaving none ``running`` under its lease, and exits; a new worker does
what it gave back."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.faults.conftest import OpenScenario

RUN = "gpu-worker-terminated"


def test_busy_segmentation_worker_terminated(open_scenario: OpenScenario, cohort: Path) -> None:
    scenario = open_scenario("segmentation worker SIGTERMed mid-study")
    first = scenario.start_gpu_worker("first")
    scenario.start_cpu_worker()
    scenario.submit(cohort, RUN)
    scenario.wait_for_status(RUN, "running", worker=first.name)
    first.proc.send_signal(signal.SIGTERM)  # the main process: Celery's warm shutdown
    scenario.fault(f"SIGTERM {first.name}")
    shutdown_s = scenario.wait_until(lambda: not first.alive(), "the terminated worker exits", RUN, timeout=120)
    rows = scenario.studies(RUN)
    held = [s for s in rows if s.status == "running" and s.worker == first.name]
    assert not held, f"the terminated worker left studies running under its lease: {held}"
    given_back = sum(s.status == "queued" for s in rows)
    if given_back:
        scenario.start_gpu_worker("second")

    scenario.conclude(RUN, 2, shutdown_s=round(shutdown_s, 1), exit_code=first.proc.returncode,
                      given_back=given_back)
