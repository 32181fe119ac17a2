"""Studies from S3 and results to S3, against moto's S3 server over HTTP, through boto3."""

from __future__ import annotations

from pathlib import Path

import boto3
import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import select

from db.schema import Mask, Metric, Study
from db.session import open_record, session_scope
from heartseg.enums import StudyStatus
from heartseg.errors import StudyError
from heartseg.settings import Settings, get_settings
from heartseg.sources.s3 import discover_s3, fetch
from heartseg.storage import S3Store, StorageError
from scheduler.submit import submit_sources
from tests.conftest import upload_folder
from tests.phantom_cache import write_cohort
from tests.test_models import fake_model
from tests.test_pipeline_stages import Oracle
from workers.pipeline import ModelInfo, evaluate_stage, segment_stage
from workers.stage_context import StageContext


@pytest.fixture
def bucket(s3_endpoint: str, tmp_path: Path) -> str:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    name = f"cohort-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    client.create_bucket(Bucket=name)
    write_cohort(tmp_path / "local", 2, seed=12)
    upload_folder(client, name, "studies/acdc", tmp_path / "local")
    client.put_object(Bucket=name, Key="studies/acdc/loose.nii.gz", Body=b"x")
    client.put_object(Bucket=name, Key="studies/acdc/phantom009/Info.cfg",
                      Body=b"ED: 1\nES: 5\nGroup: NOR\nHeight: 170\nNbFrame: 10\nWeight: 70\n")
    client.create_bucket(Bucket=name + "-results")
    return name


def test_discover_and_fetch(bucket: str, s3_endpoint: str, tmp_path: Path) -> None:
    found = discover_s3(f"s3://{bucket}/studies/acdc", s3_endpoint)
    assert found == [f"s3://{bucket}/studies/acdc/phantom001", f"s3://{bucket}/studies/acdc/phantom002",
                     f"s3://{bucket}/studies/acdc/phantom009", f"s3://{bucket}/studies/acdc/loose.nii.gz"]
    local = fetch(found[0], tmp_path / "cache", s3_endpoint)
    assert (local / "Info.cfg").is_file() and local.name == "phantom001"
    original = tmp_path / "local" / "phantom001" / "phantom001_4d.nii.gz"
    assert (local / "phantom001_4d.nii.gz").read_bytes() == original.read_bytes()
    with pytest.raises(StudyError, match="no objects under this prefix"):
        fetch(f"s3://{bucket}/studies/acdc/nobody", tmp_path / "cache", s3_endpoint)
    with pytest.raises(StudyError, match="cannot download"):
        fetch(f"s3://{bucket}/studies/acdc/missing.nii.gz", tmp_path / "cache", s3_endpoint)
    with pytest.raises(StudyError, match="no studies found"):
        discover_s3(f"s3://{bucket}/elsewhere", s3_endpoint)


def test_store_round_trip_and_missing_key(bucket: str, s3_endpoint: str) -> None:
    store = S3Store(f"s3://{bucket}-results/masks-root", s3_endpoint)
    uri = store.put("a/b.bin", b"123")
    assert uri == f"s3://{bucket}-results/masks-root/a/b.bin"
    assert store.get(uri) == b"123"
    with pytest.raises(StorageError, match="download failed"):
        store.get(f"s3://{bucket}-results/masks-root/a/none.bin")


def test_stages_read_from_and_write_to_s3(bucket: str, s3_endpoint: str, tmp_path: Path) -> None:
    engine = open_record(f"sqlite:///{tmp_path / 'record.db'}")
    model_dir = fake_model(tmp_path / "models")
    settings = Settings(trusted_model_roots=[tmp_path / "models"], s3_endpoint_url=s3_endpoint,
                        cache_dir=tmp_path / "cache")
    sources = discover_s3(f"s3://{bucket}/studies/acdc", s3_endpoint)
    submission = submit_sources(engine, settings, name="s3-run", source_uri=f"s3://{bucket}/studies/acdc",
                                sources=sources, model_dir=model_dir)
    ctx = StageContext(engine, S3Store(f"s3://{bucket}-results/out", s3_endpoint), settings)
    oracle = Oracle(sorted((tmp_path / "local").iterdir()))
    for study_id in submission.study_ids:
        if segment_stage(ctx, study_id, ModelInfo(submission.fingerprint, oracle), worker="t"):
            evaluate_stage(ctx, study_id)
    with session_scope(engine) as session:
        status = dict(session.execute(select(Study.patient_id, Study.status)).all())
        assert status == {"phantom001": StudyStatus.DONE, "phantom002": StudyStatus.DONE,
                          "phantom009": StudyStatus.FAILED, "loose.nii.gz": StudyStatus.FAILED}
        errors = dict(session.execute(select(Study.patient_id, Study.error)).all())
        assert "phantom009_frame01.nii.gz: file not found" in errors["phantom009"]
        assert "loose.nii.gz" in errors["loose.nii.gz"]
        masks = session.execute(select(Mask.uri)).scalars().all()
        assert len(masks) == 4 and all(u.startswith(f"s3://{bucket}-results/out/masks/") for u in masks)
        assert all(d == pytest.approx(1.0) for d in session.execute(select(Metric.dice)).scalars())
    # the mask in S3 is a NIfTI in the source geometry
    data = ctx.store.get(masks[0])
    path = tmp_path / "mask.nii.gz"
    path.write_bytes(data)
    mask = nib.load(path)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 3}
    # both stages deleted their downloaded copies: a cohort does not fill the worker's disk
    assert (tmp_path / "cache").is_dir() and not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    engine.dispose()


def test_dicom_series_in_s3_is_discovered_and_loaded(bucket: str, s3_endpoint: str, tmp_path: Path) -> None:
    from heartseg.sources import load_study
    from heartseg.sources.s3 import S3Source
    from tests.conftest import require_shared

    series = require_shared(get_settings().shared_data / "sunnybrook" / "SCD0000101", "Sunnybrook series")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    upload_folder(client, bucket, "studies/dicom/SCD0000101", series)
    found = discover_s3(f"s3://{bucket}/studies/dicom", s3_endpoint)
    assert found == [f"s3://{bucket}/studies/dicom/SCD0000101"]
    study = load_study(S3Source(tmp_path / "cache", s3_endpoint), found[0], cine=True)
    assert study.shape == (256, 256, 12) and len(study.frames) == 20
    assert study.dicom_files is not None and len(study.dicom_files[1]) == 12
