"""Optional outputs of the segment stage on hostile DICOM input: slices whose orientations differ in the
last decimals still get SEGs, and a SEG or STOW-RS that fails leaves the masks recorded with a warning."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sqlalchemy import Engine, select

from db.lifecycle import add_warning, claim_study
from db.schema import Mask, Study
from db.session import open_record, session_scope
from heartseg.enums import StudyStatus
from heartseg.settings import Settings
from heartseg.sources.dicomweb import PacsError
from heartseg.sources.local import LocalSource
from heartseg.storage import LocalStore
from scheduler.submit import submit_sources
from tests.record_fixtures import new_run
from tests.test_dicom import copy_series, series_dir  # noqa: F401 - the fixture
from tests.test_dicom_seg import threshold_segmenter
from tests.test_models import fake_model
from workers.pipeline import ModelInfo, segment_stage
from workers.stage_context import SourceResolver, StageContext


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _segment(tmp_path: Path, sqlite_url: str, folder: Path,
             sources: SourceResolver | None = None) -> tuple[Engine, bool]:
    """Submit the series in ``folder`` and run the segment stage on it with the threshold stand-in model."""
    engine = open_record(sqlite_url)
    model_dir = fake_model(tmp_path / "models")
    settings = Settings(trusted_model_roots=[tmp_path / "models"])
    submission = submit_sources(engine, settings, name="hostile", source_uri=str(folder), sources=[str(folder)],
                                model_dir=model_dir)
    ctx = (StageContext(engine, LocalStore(tmp_path / "results"), settings) if sources is None
           else StageContext(engine, LocalStore(tmp_path / "results"), settings, sources))
    done = segment_stage(ctx, submission.study_ids[0], ModelInfo(submission.fingerprint, threshold_segmenter),
                         worker="test")
    return engine, done


def _perturb_orientations(folder: Path, every: int = 3, delta: float = 1e-6) -> int:
    """Move the orientation of every ``every``-th file by ``delta`` in two cosines (within the reader's tolerance)."""
    changed = 0
    for index, path in enumerate(sorted(folder.iterdir(), key=lambda p: int(p.stem))):
        if index % every:
            continue
        dataset = pydicom.dcmread(path)
        orientation = [float(v) for v in dataset.ImageOrientationPatient]
        orientation[0] += delta
        orientation[4] -= delta
        dataset.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        dataset.save_as(path)
        changed += 1
    return changed


def test_orientations_equal_within_tolerance_still_get_segs(sqlite_url: str, series_dir: Path,  # noqa: F811
                                                            tmp_path: Path) -> None:
    folder = tmp_path / "SCD0000101"
    copy_series(series_dir, folder)
    assert _perturb_orientations(folder) == 80
    before = _digests(folder)
    engine, done = _segment(tmp_path, sqlite_url, folder)
    assert done
    with session_scope(engine) as session:
        row = session.execute(select(Study)).scalar_one()
        assert (row.status, row.error, row.warnings) == (StudyStatus.SEGMENTED, None, None)
        masks = session.execute(select(Mask).order_by(Mask.frame)).scalars().all()
    assert [m.frame for m in masks] == list(range(1, 21))
    assert all(m.seg_uri and Path(m.seg_uri).is_file() for m in masks)
    for mask in masks:
        seg = pydicom.dcmread(mask.seg_uri)
        cosines = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
        assert np.allclose([float(v) for v in cosines], [-0.104592, 0.346381, -0.932245, -0.733192, -0.660188,
                                                        -0.163037], atol=1e-5)
    assert _digests(folder) == before  # the study's files are read, never changed


def test_a_seg_that_cannot_be_built_leaves_the_masks_and_a_warning(sqlite_url: str, series_dir: Path,  # noqa: F811
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.dicom_seg

    def refuse(labels: np.ndarray, sources: Sequence[pydicom.Dataset], **kwargs: object) -> None:
        raise ValueError("Source images must have a shared orientation.")

    monkeypatch.setattr(workers.dicom_seg, "build_seg", refuse)
    folder = tmp_path / "SCD0000101"
    copy_series(series_dir, folder)
    engine, done = _segment(tmp_path, sqlite_url, folder)
    assert done  # the evaluation follows
    with session_scope(engine) as session:
        row = session.execute(select(Study)).scalar_one()
        assert row.status == StudyStatus.SEGMENTED and row.error is None
        masks = session.execute(select(Mask).order_by(Mask.frame)).scalars().all()
    assert [m.frame for m in masks] == list(range(1, 21))
    assert all(Path(m.uri).is_file() and m.seg_uri is None and m.seg_sha256 is None for m in masks)
    assert row.warnings is not None
    lines = row.warnings.splitlines()
    assert len(lines) == 1, lines
    assert "DICOM SEG" in lines[0] and "shared orientation" in lines[0] and "ValueError" in lines[0]
    assert "frames 1-20" in lines[0]


class _UnreachablePacs(LocalSource):
    """A local series whose STOW-RS back always fails as a PACS that does not answer."""

    def store_back(self, source: str, payloads: Sequence[bytes]) -> bool:
        raise PacsError(f"{source}: the PACS does not answer (ConnectionError)")


def test_a_failed_stow_leaves_the_masks_and_segs_and_a_warning(sqlite_url: str, series_dir: Path,  # noqa: F811
                                                               tmp_path: Path) -> None:
    folder = tmp_path / "SCD0000101"
    copy_series(series_dir, folder)
    engine, done = _segment(tmp_path, sqlite_url, folder, sources=lambda uri, settings: _UnreachablePacs())
    assert done
    with session_scope(engine) as session:
        row = session.execute(select(Study)).scalar_one()
        masks = session.execute(select(Mask).order_by(Mask.frame)).scalars().all()
    assert row.status == StudyStatus.SEGMENTED and row.error is None
    assert len(masks) == 20 and all(m.seg_uri and Path(m.seg_uri).is_file() for m in masks)
    assert row.warnings is not None and len(row.warnings.splitlines()) == 1
    assert "not stored back" in row.warnings and "does not answer" in row.warnings


def test_warnings_are_appended_one_line_each_and_cleared_by_a_new_claim(record_url: str) -> None:
    engine = open_record(record_url)
    try:
        _, studies = new_run(engine, "run-w", sources=["s1"])
        study_id = studies["s1"]
        with session_scope(engine) as session:
            assert claim_study(session, study_id, "gpu0@a", lease_s=0.0)
            add_warning(session, study_id, "DICOM SEG not written for frame 3: ValueError: no")
            add_warning(session, study_id, "DICOM SEGs not stored back\nto the source: PacsError: 503")
        with session_scope(engine) as session:
            warnings = session.execute(select(Study.warnings).where(Study.id == study_id)).scalar_one()
            assert warnings == ("DICOM SEG not written for frame 3: ValueError: no\n"
                                "DICOM SEGs not stored back to the source: PacsError: 503")
            assert claim_study(session, study_id, "gpu1@b", lease_s=60)  # the lease expired: segmented again
            assert session.execute(select(Study.warnings).where(Study.id == study_id)).scalar_one() is None
    finally:
        engine.dispose()
