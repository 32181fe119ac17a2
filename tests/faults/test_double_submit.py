"""The same run submitted twice at once (two ``heartseg submit`` processes, same ``--run``): one run, one row
per study, and every study segmented and evaluated once."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from tests.faults.harness import Scenario

RUN = "double-submit"


def test_same_run_submitted_twice_at_once(pool: Scenario, own_cohort: Path) -> None:
    scenario = pool.reuse("same run submitted twice at once")
    submits = [scenario.submit_process(own_cohort, RUN) for _ in range(2)]
    scenario.fault("two submits of one run at once")
    for submit in submits:
        out, err = submit.communicate(timeout=120)
        assert submit.returncode == 0, f"submit failed ({submit.returncode}):\n{out}\n{err}"

    scenario.conclude(RUN, 2)

    with scenario.engine.connect() as connection:
        runs = connection.execute(text("SELECT count(*) FROM runs WHERE name = :run"), {"run": RUN}).scalar_one()
    assert runs == 1
    for study in scenario.studies(RUN):
        assert study.attempts == 1, f"{study} was segmented more than once"
