"""A poison study: its loading raises an unexpected error (not bad input the readers recognise) every time. It
is tried HEARTSEG_MAX_ATTEMPTS times and then ``failed`` with the error's type and message, while the rest of the
cohort is done."""

from __future__ import annotations

from pathlib import Path

from tests.faults.cohort import add_poison_study
from tests.faults.harness import FAST_SETTINGS, Scenario

RUN = "poison-study"


def test_poison_study_fails_after_max_attempts(pool: Scenario, own_cohort: Path) -> None:
    add_poison_study(own_cohort, own_cohort / "phantom001", "poison001")
    scenario = pool.reuse("poison study")
    scenario.submit(own_cohort, RUN)
    scenario.fault("a study whose loading raises TypeError")

    scenario.conclude(RUN, 3, failed={"poison001"})

    poison = next(s for s in scenario.studies(RUN) if s.patient_id == "poison001")
    assert poison.attempts == int(FAST_SETTINGS["HEARTSEG_MAX_ATTEMPTS"]), poison
    assert poison.error is not None and poison.error.startswith("TypeError: Cannot cast array data"), poison.error
    assert "\n" not in poison.error, "the reason is one line"
