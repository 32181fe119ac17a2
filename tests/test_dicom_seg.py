"""DICOM SEG output (highdicom) on the real Sunnybrook GE series: pixels, references, codes, stable UIDs."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import select

from db.schema import CardiacIndex, Mask, Study
from db.session import open_record, session_scope
from heartseg.enums import StudyStatus
from heartseg.errors import StudyError
from heartseg.settings import Settings
from heartseg.storage import LocalStore, sha256_hex
from heartseg.studies.dicom import load_dicom_cine
from scheduler.submit import submit_sources
from tests.test_dicom import copy_series, series_dir  # noqa: F401 - the fixture
from tests.test_models import fake_model
from workers.dicom_seg import build_seg, encode_seg, read_sources, referenced_instances, seg_labels
from workers.pipeline import ModelInfo, evaluate_stage, segment_stage
from workers.stage_context import StageContext

FINGERPRINT = "6deea776f5efab5f" * 4


def blobs(shape: tuple[int, int, int]) -> np.ndarray:
    """A label map with all three structures, different on every slice, none on the first."""
    labels = np.zeros(shape, np.uint8)
    x, y = np.mgrid[: shape[0], : shape[1]]
    for k in range(1, shape[2]):
        r = np.hypot(x - 128 - k, y - 120)
        labels[..., k][r < 28] = 2
        labels[..., k][r < 18 + k % 3] = 3
        labels[..., k][np.hypot(x - 90, y - 150 + k) < 15] = 1
    return labels


def threshold_segmenter(image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """A stand-in model: bright voxels as LV, the next brightest as MYO, the next as RV."""
    high, mid, low = np.percentile(image, [99.5, 99.0, 98.0])
    return np.select([image > high, image > mid, image > low], [3, 2, 1], 0).astype(np.uint8)


def test_seg_round_trip_pixels_references_codes(series_dir: Path) -> None:  # noqa: F811
    study = load_dicom_cine(series_dir)
    labels = blobs(study.shape)
    sources = read_sources(study.dicom_files[5])
    seg = build_seg(labels, sources, fingerprint=FINGERPRINT, frame=5, version="0.1.0")
    back = hd.seg.segread(io.BytesIO(encode_seg(seg)))

    uids = [str(ds.SOPInstanceUID) for ds in sources]
    assert np.array_equal(seg_labels(back, uids), labels)
    assert referenced_instances(back) == set(uids)  # every frame references a source image of phase 5
    assert back.NumberOfFrames == 3 * study.shape[2]  # one frame per segment and source image
    assert back.StudyInstanceUID == sources[0].StudyInstanceUID
    assert back.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert back.InstanceNumber == 5 and back.Modality == "SEG"
    assert back.PatientBirthDate == ""  # the source's invalid 00000000 is left empty, not copied

    codes = {int(s.SegmentNumber): (s.SegmentLabel, s.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
                                    s.SegmentedPropertyTypeCodeSequence[0].CodeValue,
                                    [r.CodeValue for r in s.get("AnatomicRegionSequence", [])])
             for s in back.SegmentSequence}
    assert codes == {1: ("RV cavity", "85756007", "87612001", ["53085002"]),
                     2: ("LV myocardium", "91723000", "49848007", []),
                     3: ("LV cavity", "85756007", "87612001", ["87878005"])}
    # each segment's recommended display colour (CIELab, as DICOM stores it) is HeartSeg's colour of it
    shown = {int(s.SegmentNumber): hd.color.CIELabColor.from_dicom_value(s.RecommendedDisplayCIELabValue).to_rgb()
             for s in back.SegmentSequence}
    assert shown == {1: (0x33, 0xA3, 0xFF), 2: (0xFF, 0xD2, 0x1F), 3: (0xFF, 0x3B, 0x3B)}
    algorithm = back.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "HeartSeg nnU-Net v2" and algorithm.AlgorithmVersion == FINGERPRINT
    assert FINGERPRINT in algorithm.AlgorithmParameters

    again = build_seg(labels, read_sources(study.dicom_files[5]), fingerprint=FINGERPRINT, frame=5, version="0.1.0")
    other = build_seg(labels, read_sources(study.dicom_files[6]), fingerprint=FINGERPRINT, frame=6, version="0.1.0")
    assert again.SOPInstanceUID == seg.SOPInstanceUID  # a re-delivered task makes the same instance
    assert other.SOPInstanceUID != seg.SOPInstanceUID and other.SeriesInstanceUID == seg.SeriesInstanceUID


def test_seg_refuses_a_mask_that_does_not_fit(series_dir: Path) -> None:  # noqa: F811
    study = load_dicom_cine(series_dir)
    with pytest.raises(StudyError, match="does not fit"):
        build_seg(np.zeros((256, 256, 11), np.uint8), read_sources(study.dicom_files[1]), fingerprint=FINGERPRINT,
                  frame=1, version="0.1.0")


def test_segment_stage_writes_a_seg_beside_each_mask(sqlite_url: str, series_dir: Path,  # noqa: F811
                                                     tmp_path: Path) -> None:
    folder = tmp_path / "SCD0000101"
    copy_series(series_dir, folder)
    engine = open_record(sqlite_url)
    model_dir = fake_model(tmp_path / "models")
    settings = Settings(trusted_model_roots=[tmp_path / "models"])
    submission = submit_sources(engine, settings, name="dicom", source_uri=str(folder), sources=[str(folder)],
                                model_dir=model_dir)
    ctx = StageContext(engine, LocalStore(tmp_path / "results"), settings)
    assert segment_stage(ctx, submission.study_ids[0], ModelInfo(submission.fingerprint, threshold_segmenter),
                         worker="test")

    study = load_dicom_cine(folder)
    with session_scope(engine) as session:
        row = session.execute(select(Study)).scalar_one()
        assert row.status == StudyStatus.SEGMENTED
        masks = session.execute(select(Mask).order_by(Mask.frame)).scalars().all()
    assert [m.frame for m in masks] == list(range(1, 21))  # no stated ED/ES: every phase
    for mask in masks:
        seg_path = Path(mask.seg_uri)
        assert seg_path.parent == Path(mask.uri).parent and seg_path.name.endswith(f"frame{mask.frame:02d}_seg.dcm")
        assert sha256_hex(seg_path.read_bytes()) == mask.seg_sha256
        seg = hd.seg.segread(seg_path)
        uids = [str(read_sources([f])[0].SOPInstanceUID) for f in study.dicom_files[mask.frame]]
        nifti = np.asarray(nib.load(mask.uri).dataobj)
        assert np.array_equal(seg_labels(seg, uids), nifti)
        assert nifti.any() and set(np.unique(nifti)) == {0, 1, 2, 3}

    # the heart rate in the DICOM headers (median 79 bpm) gives the cardiac output
    evaluate_stage(ctx, submission.study_ids[0])
    with session_scope(engine) as session:
        index = session.execute(select(CardiacIndex)).scalar_one()
    assert study.info.heart_rate_bpm == 79.0
    assert index.lv_cardiac_output_l_min == pytest.approx(index.lv_sv_ml * 79.0 / 1000)


def test_seg_passes_dciodvfy(series_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """David Clunie's validator (Debian's dicom3tools) finds no error in the SEG but the source's own UIDs."""
    import shutil
    import subprocess

    assert shutil.which("dciodvfy"), "dciodvfy is not installed (make system)"
    study = load_dicom_cine(series_dir)
    path = tmp_path / "seg.dcm"
    path.write_bytes(encode_seg(build_seg(blobs(study.shape), read_sources(study.dicom_files[1]),
                                          fingerprint=FINGERPRINT, frame=1, version="0.1.0")))
    report = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, check=False)
    lines = (report.stdout + report.stderr).splitlines()
    assert any(line.strip() == "Segmentation" for line in lines)  # it recognised the IOD
    errors = [line for line in lines if line.startswith("Error")]
    # Sunnybrook's UIDs have leading zeros in a component (invalid, but they are the source's own, and a SEG
    # must reference its sources by their UIDs): every error is that one.
    assert errors and all("Leading zeroes in embedded numeric component" in line for line in errors), errors[:5]
