"""A segmentation worker SIGKILLed mid-study: its leases expire, the reconciler queues its studies again, and the
other worker takes them over; each study is recorded once."""

from __future__ import annotations

from pathlib import Path

from tests.faults.conftest import OpenScenario

RUN = "gpu-worker-killed"


def test_segmentation_worker_killed_mid_study(open_scenario: OpenScenario, cohort: Path) -> None:
    scenario = open_scenario("segmentation worker SIGKILLed mid-study")
    workers = [scenario.start_gpu_worker("one"), scenario.start_gpu_worker("two")]
    scenario.start_cpu_worker()
    scenario.submit(cohort, RUN)
    holder = scenario.wait_for_status(RUN, "running")[0].worker
    victim = next(w for w in workers if w.name == holder)
    survivor = next(w for w in workers if w is not victim)
    victim.kill()
    scenario.fault(f"SIGKILL {victim.name}")
    orphans = [s.id for s in scenario.studies(RUN) if s.status == "running" and s.worker == victim.name]
    assert orphans, "the killed worker held no study"

    scenario.conclude(RUN, 2, orphans=len(orphans))

    rows = {s.id: s for s in scenario.studies(RUN)}
    for study_id in orphans:  # taken over: a second try, by the other worker
        assert rows[study_id].attempts == 2, rows[study_id]
        assert rows[study_id].worker == survivor.name, rows[study_id]
