"""End to end on the real servers: submit -> Redis -> celery gpu worker (on the CPU) -> cpu worker -> PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import redis
from sqlalchemy import func, select

from db.schema import CardiacIndex, Mask, Metric, Study
from db.session import make_engine, session_scope
from heartseg.enums import StudyStatus
from tests.phantom_cache import write_cohort

VALIDATION = ["patient019", "patient059"]


@pytest.fixture
def environment(postgres_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    db = int(uuid.uuid4().int % 10) + 5
    client = redis.Redis(host="127.0.0.1", port=6379, db=db)
    client.flushdb()
    env = {**os.environ, "HEARTSEG_DATABASE_URL": postgres_url, "HEARTSEG_BROKER_URL": f"redis://127.0.0.1:6379/{db}",
           "HEARTSEG_RESULTS_URI": str(tmp_path / "results"), "HEARTSEG_USE_MIRRORING": "false", "COLUMNS": "200"}
    yield env
    client.flushdb()


@contextmanager
def running_workers(environment: dict[str, str], tmp_path: Path) -> Iterator[None]:
    """A gpu-queue worker on the CPU and a cpu-queue worker, stopped (SIGTERM, then SIGKILL) on exit."""
    logs = [open(tmp_path / name, "w") for name in ("gpu.log", "cpu.log")]  # noqa: SIM115 - closed below
    procs = [
        subprocess.Popen([sys.executable, "-m", "scheduler.cli", "worker", "gpu", "--devices", "cpu"], env=environment,
                         stdout=logs[0], stderr=subprocess.STDOUT, start_new_session=True),
        subprocess.Popen([sys.executable, "-m", "scheduler.cli", "worker", "cpu", "--concurrency", "1"],
                         env=environment, stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True),
    ]
    try:
        yield
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for log in logs:
            log.close()


@pytest.fixture
def workers(environment: dict[str, str], tmp_path: Path) -> Iterator[None]:
    with running_workers(environment, tmp_path):
        yield


def heartseg(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.acdc
def test_cohort_end_to_end(environment: dict[str, str], workers: None, acdc_root: Path, tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    for patient in VALIDATION:
        shutil.copytree(acdc_root / patient, cohort / patient)
    write_cohort(tmp_path / "phantoms", 2, seed=31)
    for folder in (tmp_path / "phantoms").iterdir():
        shutil.copytree(folder, cohort / folder.name)
    broken = cohort / "patient999"
    shutil.copytree(acdc_root / VALIDATION[0], broken)
    for path in broken.iterdir():
        path.rename(broken / path.name.replace(VALIDATION[0], "patient999"))
    ed_file = broken / "patient999_frame01.nii.gz"
    ed_file.write_bytes(ed_file.read_bytes()[:5000])  # truncated

    submitted = heartseg(environment, "submit", str(cohort), "--run", "e2e")
    assert submitted.returncode == 0, submitted.stderr
    assert "5 studies enqueued" in submitted.stdout
    status = heartseg(environment, "status", "e2e", "--wait", "--poll", "1", timeout=900)
    assert status.returncode == 1  # one study failed
    assert "done=4 failed=1" in status.stdout

    engine = make_engine(environment["HEARTSEG_DATABASE_URL"])
    with session_scope(engine) as session:
        studies = {s.patient_id: s for s in session.execute(select(Study)).scalars()}
        assert studies["patient999"].status == StudyStatus.FAILED
        assert "patient999_frame01.nii.gz" in studies["patient999"].error
        for name, study in studies.items():
            if name == "patient999":
                continue
            assert study.status == StudyStatus.DONE
            masks = session.execute(select(Mask).where(Mask.study_id == study.id)).scalars().all()
            assert len(masks) == 2
            for mask in masks:
                source = nib.load(Path(study.source_uri) / f"{name}_frame{mask.frame:02d}.nii.gz")
                assert np.allclose(nib.load(mask.uri).affine, source.affine)
        dice = session.execute(select(Metric.dice).join(Study, Study.id == Metric.study_id)
                               .where(Study.patient_id.in_(VALIDATION))).scalars().all()
        assert len(dice) == len(VALIDATION) * 2 * 3
        assert float(np.mean(dice)) >= 0.85  # the card: 0.9035 without mirroring on all 20 validation patients
        per_study = dict(session.execute(select(CardiacIndex.study_id, func.count())
                                         .group_by(CardiacIndex.study_id)).all())
        assert all(per_study.get(s.id) == 2 for n, s in studies.items() if n != "patient999")  # pred and ref
    engine.dispose()

    again = heartseg(environment, "submit", str(cohort), "--run", "e2e-again")
    assert "1 studies enqueued, 4 already done" in again.stdout  # only the failed one is tried again
    forced = heartseg(environment, "submit", str(cohort), "--run", "e2e-forced", "--force")
    assert "5 studies enqueued" in forced.stdout
    redone = heartseg(environment, "status", "e2e-forced", "--wait", "--poll", "1", timeout=900)
    assert "done=4 failed=1" in redone.stdout  # redone beside the first run's rows
    engine = make_engine(environment["HEARTSEG_DATABASE_URL"])
    with session_scope(engine) as session:
        assert session.execute(select(func.count()).select_from(Metric)).scalar_one() == 2 * 4 * 2 * 3
    engine.dispose()


def test_s3_source_to_s3_results(environment: dict[str, str], s3_endpoint: str, tmp_path: Path) -> None:
    """The same flow reading studies from S3 and writing masks to S3 (moto's server, over HTTP, via boto3)."""
    import boto3

    from tests.conftest import upload_folder

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"e2e-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    client.create_bucket(Bucket=bucket + "-out")
    write_cohort(tmp_path / "phantoms", 2, seed=41)
    upload_folder(client, bucket, "cohort", tmp_path / "phantoms")
    env = {**environment, "HEARTSEG_S3_ENDPOINT_URL": s3_endpoint, "HEARTSEG_RESULTS_URI": f"s3://{bucket}-out/hs",
           "HEARTSEG_CACHE_DIR": str(tmp_path / "cache"), "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    with running_workers(env, tmp_path):
        submitted = heartseg(env, "submit", f"s3://{bucket}/cohort", "--run", "e2e-s3")
        assert submitted.returncode == 0, submitted.stderr
        status = heartseg(env, "status", "e2e-s3", "--wait", "--poll", "1", timeout=900)
    assert status.returncode == 0, status.stdout + status.stderr
    engine = make_engine(env["HEARTSEG_DATABASE_URL"])
    with session_scope(engine) as session:
        uris = session.execute(select(Mask.uri)).scalars().all()
        assert len(uris) == 4 and all(u.startswith(f"s3://{bucket}-out/hs/masks/") for u in uris)
        assert session.execute(select(func.count()).select_from(Metric)).scalar_one() == 12
    engine.dispose()
    listed = client.list_objects_v2(Bucket=bucket + "-out", Prefix="hs/masks/")["KeyCount"]
    assert listed == 4
