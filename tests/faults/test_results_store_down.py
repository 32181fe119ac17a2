"""The results store failing for a while: (a) the S3 endpoint down (connections refused), (b) the results folder
gone (a file where its parent folder was; chmod would not stop root). Writing or reading a mask is a transient
error: the task retries it with backoff, the study does not use up a try, and the run finishes once the store is
back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import OpenScenario
from tests.faults.harness import Scenario
from tests.faults.servers import MotoS3

#: How long the store stays unusable.
DOWN_S = 4.0
BUCKET = "heartseg-results"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3() -> Iterator[MotoS3]:
    """A moto S3 endpoint with an empty results bucket, stopped at the end."""
    import boto3

    server = MotoS3()
    server.start()
    client = boto3.client("s3", endpoint_url=server.url, region_name=AWS["AWS_DEFAULT_REGION"],
                          aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"])
    client.create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


def store_errors(scenario: Scenario, text: str) -> int:
    """Lines of the workers' logs that mention ``text`` (how often the outage was met)."""
    return sum(text in line for worker in scenario.workers if worker.log.exists()
               for line in worker.log.read_text(errors="replace").splitlines())


def assert_no_try_used(scenario: Scenario, run: str) -> None:
    """A transient error does not count as a try."""
    for study in scenario.studies(run):
        assert study.attempts == 1, f"{study}: the store's outage used up a try"


def test_s3_endpoint_down(open_scenario: OpenScenario, s3: MotoS3, cohort: Path) -> None:
    run = "s3-down"
    scenario = open_scenario("S3 results endpoint down", results_uri=f"s3://{BUCKET}/results",
                             HEARTSEG_S3_ENDPOINT_URL=s3.url, **AWS)
    scenario.start_gpu_worker("gpu")
    scenario.start_cpu_worker()
    scenario.submit(cohort, run)
    scenario.wait_for_status(run, "running")
    s3.stop()
    scenario.fault("S3 endpoint stopped")
    time.sleep(DOWN_S)
    s3.start()

    scenario.conclude(run, 2, store_errors=store_errors(scenario, "upload failed"))
    assert_no_try_used(scenario, run)


def test_results_folder_unusable(pool: Scenario, own_cohort: Path) -> None:
    run = "results-folder-unusable"
    scenario = pool.reuse("results folder unusable")
    store = Path(scenario.env["HEARTSEG_RESULTS_URI"]).parent
    store.mkdir(exist_ok=True)
    away = store.with_name("store-away")
    scenario.submit(own_cohort, run)
    scenario.wait_for_status(run, "running")
    store.rename(away)
    try:
        store.write_text("not a folder\n")  # every path under it is now unusable, to root too
        scenario.fault("results folder replaced by a file")
        time.sleep(DOWN_S)
    finally:
        store.unlink()
        away.rename(store)

    scenario.conclude(run, 2, store_errors=store_errors(scenario, "Not a directory"))
    assert_no_try_used(scenario, run)
