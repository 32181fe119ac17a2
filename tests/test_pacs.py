"""A PACS end to end: Orthanc (Debian's, with DICOMweb) holds the Sunnybrook cine series; ``heartseg submit
dicomweb://...`` sends it through Redis to real workers running the shipped model; the SEGs come back to Orthanc
by STOW-RS and are read back from it. The logs of the run never show the patient's name or birth date."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from sqlalchemy import select

from db.schema import Mask, Study
from db.session import make_engine, session_scope
from heartseg.enums import PhaseSource, StudyStatus
from heartseg.errors import StudyError
from heartseg.settings import Settings
from heartseg.sources import source_for
from heartseg.sources.dicomweb import PacsError, discover_dicomweb, fetch_series, make_client, parse_source
from heartseg.studies.dicom import load_dicom_cine
from tests.orthanc_server import Orthanc, orthanc_server
from tests.test_dicom import copy_series, series_dir  # noqa: F401 - the fixture
from tests.test_pipeline_e2e import environment, heartseg, running_workers  # noqa: F401 - the fixture
from workers.dicom_seg import referenced_instances, seg_labels

PATIENT_NAME = "Quasimodo^Esmeralda"
BIRTH_DATE = "19450317"


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Orthanc]:
    with orthanc_server(tmp_path / "orthanc") as server:
        yield server


@pytest.fixture
def named_series(series_dir: Path, tmp_path: Path) -> Path:  # noqa: F811
    """The Sunnybrook series with a patient name and birth date that must never reach a log."""
    folder = tmp_path / "series"
    for path in copy_series(series_dir, folder):
        dataset = pydicom.dcmread(path)
        dataset.PatientName = PATIENT_NAME
        dataset.PatientBirthDate = BIRTH_DATE
        dataset.save_as(path)
    return folder


def test_dicomweb_uris_and_errors(pacs: Orthanc, named_series: Path, tmp_path: Path) -> None:
    files = sorted(named_series.iterdir())
    pacs.upload(files[:24])
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    root = f"dicomweb://127.0.0.1:{pacs.port}/dicom-web"
    assert parse_source(f"{root}/studies/{study_uid}/series/{series_uid}").base_url == pacs.dicomweb_url
    assert discover_dicomweb(root) == [f"{root}/studies/{study_uid}/series/{series_uid}"]  # every MR study
    assert discover_dicomweb(root, [study_uid]) == [f"{root}/studies/{study_uid}/series/{series_uid}"]
    source = source_for(root, Settings(cache_dir=tmp_path / "cache"))
    folder = Path(source.fetch(f"{root}/studies/{study_uid}/series/{series_uid}"))
    assert folder.is_relative_to(tmp_path / "cache") and len(list(folder.iterdir())) == 24
    source.release(f"{root}/studies/{study_uid}/series/{series_uid}")
    assert not folder.exists()
    with pytest.raises(StudyError, match="HTTP 404"):
        fetch_series(f"{root}/studies/{study_uid}/series/1.2.3.4", tmp_path / "cache")
    with pytest.raises(PacsError, match="does not answer"):
        discover_dicomweb(f"dicomweb://127.0.0.1:{pacs.port + 1}/dicom-web", [study_uid])
    with pytest.raises(StudyError, match="not a DICOMweb source"):
        parse_source("dicomweb://")


def test_pacs_cohort_round_trip(pacs: Orthanc, named_series: Path, environment: dict[str, str],  # noqa: F811
                                tmp_path: Path) -> None:
    files = sorted(named_series.iterdir())
    pacs.upload(files)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    study_uid, series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    env = {**environment, "HEARTSEG_CACHE_DIR": str(tmp_path / "cache"), "HEARTSEG_LOG_FORMAT": "json"}

    with running_workers(env, tmp_path):
        submitted = heartseg(env, "submit", f"dicomweb://127.0.0.1:{pacs.port}/dicom-web", "--study", study_uid,
                             "--run", "pacs")
        assert submitted.returncode == 0, submitted.stderr
        assert "1 studies enqueued" in submitted.stdout
        status = heartseg(env, "status", "pacs", "--wait", "--poll", "1", timeout=900)
        assert status.returncode == 0, status.stdout + status.stderr
    logs = "".join((tmp_path / name).read_text() for name in ("gpu.log", "cpu.log"))
    logs += submitted.stdout + submitted.stderr + status.stdout + status.stderr

    engine = make_engine(env["HEARTSEG_DATABASE_URL"])
    with session_scope(engine) as session:
        study = session.execute(select(Study)).scalar_one()
        assert study.status == StudyStatus.DONE
        assert study.source_uri.endswith(f"/studies/{study_uid}/series/{series_uid}")
        assert study.phase_source is PhaseSource.LV_VOLUME and study.ed_frame != study.es_frame
        masks = {m.frame: m for m in session.execute(select(Mask)).scalars()}
    engine.dispose()
    assert sorted(masks) == list(range(1, 21))
    assert not list((tmp_path / "cache").rglob("*.dcm"))  # the workers deleted their copies of the series
    assert all(m.seg_uri and m.seg_uri.endswith("_seg.dcm") for m in masks.values())

    client = make_client(pacs.dicomweb_url)
    seg_series = client.search_for_series(study_uid, search_filters={"Modality": "SEG"})
    assert len(seg_series) == 1
    segs = client.retrieve_series(study_uid, seg_series[0]["0020000E"]["Value"][0])
    assert sorted(int(s.InstanceNumber) for s in segs) == list(range(1, 21))
    in_pacs = {i["00080018"]["Value"][0] for i in client.search_for_instances(study_uid, series_uid)}
    local = load_dicom_cine(named_series)
    for dataset in segs:
        seg = hd.seg.Segmentation.from_dataset(dataset)
        frame = int(seg.InstanceNumber)
        assert referenced_instances(seg) <= in_pacs  # the references resolve in the PACS
        uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in local.dicom_files[frame]]
        mask = np.asarray(nib.load(masks[frame].uri).dataobj)
        assert np.array_equal(seg_labels(seg, uids), mask)
        assert Path(masks[frame].seg_uri).read_bytes()[128:132] == b"DICM"
    ed = np.asarray(nib.load(masks[int(study.ed_frame)].uri).dataobj)
    assert (ed == 3).sum() > 1000  # the model found an LV cavity on this scanner's images

    for secret in (PATIENT_NAME, "Quasimodo", "Esmeralda", BIRTH_DATE, "1945-03-17"):
        assert secret not in logs, f"{secret} appears in the logs of the run"
    assert '"study_id"' in logs  # the JSON log lines carry the study id
    pydicom.dcmread(io.BytesIO(Path(masks[1].seg_uri).read_bytes()))  # a readable Part 10 file on disk
