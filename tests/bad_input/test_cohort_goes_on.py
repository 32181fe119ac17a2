"""One bad study in a cohort: it gets a clear reason, the rest of the cohort is done, nothing is written outside.

Each case puts one kind of bad input beside a good phantom patient and runs the cohort the way a
worker does: discovery, submit, the segment and evaluate stages (segmenting with an oracle, so
no model is needed). The bad study must end either skipped at discovery or refused at submit
with a reason, or failed in the record with a message naming its file and the problem; the good
one must be done; and no file may appear outside the record, the results and the cache.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import select

from db.schema import Study
from db.session import open_record, session_scope
from heartseg.enums import StudyStatus
from heartseg.settings import Settings
from heartseg.sources import discover_studies
from heartseg.storage import LocalStore
from scheduler.submit import submit_sources
from tests.bad_input import changed_outside, snapshot
from tests.conftest import require_shared
from tests.phantom_cache import write_cohort
from tests.test_dicom import copy_series, edit
from tests.test_models import fake_model
from tests.test_pipeline_stages import Oracle
from workers.pipeline import ModelInfo, evaluate_stage, segment_stage
from workers.stage_context import StageContext

GOOD = "phantom001"


@dataclass(frozen=True)
class Expected:
    """Where the bad entry must be stopped, and what its reason must say."""

    entry: str
    """The bad study's folder or file name inside the cohort."""
    says: tuple[str, ...]
    """Fragments the reason must contain (the file it names, the problem)."""
    stopped_at: str = "record"
    """``discovery`` (skipped, with a reason), ``submit`` (refused) or ``record`` (the study failed)."""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One phantom patient, written once and copied into each case's cohort."""
    root = tmp_path_factory.mktemp("template")
    write_cohort(root, 1, seed=11)
    (root / GOOD / f"{GOOD}_4d.nii.gz").unlink()  # the cine is not needed for ED/ES runs
    return root / GOOD


def _patient(template: Path, cohort: Path, name: str) -> Path:
    """A copy of the template patient named ``name`` (folder, files and Info.cfg)."""
    folder = cohort / name
    folder.mkdir(parents=True)
    for source in template.iterdir():
        shutil.copy(source, folder / source.name.replace(GOOD, name))
    return folder


def _frame(folder: Path, number: int = 1, gt: bool = False) -> Path:
    return folder / f"{folder.name}_frame{number:02d}{'_gt' if gt else ''}.nii.gz"


def _rewrite(path: Path, data: np.ndarray) -> None:
    """Replace the NIfTI at ``path`` with ``data``, keeping its affine."""
    image = nib.load(path)
    nib.save(nib.Nifti1Image(data, image.affine), path)


def truncated_gzip(template: Path, cohort: Path) -> Expected:
    frame = _frame(_patient(template, cohort, "phantom002"))
    frame.write_bytes(frame.read_bytes()[: frame.stat().st_size // 2])
    return Expected("phantom002", (frame.name, "corrupt or truncated"))


def not_gzip(template: Path, cohort: Path) -> Expected:
    frame = _frame(_patient(template, cohort, "phantom002"))
    frame.write_bytes(b"this is not gzip data at all" * 10)
    return Expected("phantom002", (frame.name, "corrupt or truncated", "Not a gzipped file"))


def zero_byte_frame(template: Path, cohort: Path) -> Expected:
    frame = _frame(_patient(template, cohort, "phantom002"))
    frame.write_bytes(b"")
    return Expected("phantom002", (frame.name, "not a NIfTI image", "Empty file"))


def missing_frame(template: Path, cohort: Path) -> Expected:
    frame = _frame(_patient(template, cohort, "phantom002"), 7)
    frame.unlink()
    return Expected("phantom002", (frame.name, "file not found"))


def image_2d(template: Path, cohort: Path) -> Expected:
    frame = _frame(_patient(template, cohort, "phantom002"))
    _rewrite(frame, np.ones((40, 40), np.float32))
    return Expected("phantom002", (frame.name, "2D"))


def image_5d(template: Path, cohort: Path) -> Expected:
    frame = _frame(_patient(template, cohort, "phantom002"))
    _rewrite(frame, np.ones((8, 8, 4, 2, 2), np.float32))
    return Expected("phantom002", (frame.name, "5D"))


def nan_voxels(template: Path, cohort: Path) -> Expected:
    frame = _frame(_patient(template, cohort, "phantom002"))
    data = np.asarray(nib.load(frame).dataobj, dtype=np.float32)
    data[3, 3, 0] = np.nan
    _rewrite(frame, data)
    return Expected("phantom002", (frame.name, "NaN"))


def labels_outside_acdc(template: Path, cohort: Path) -> Expected:
    reference = _frame(_patient(template, cohort, "phantom002"), gt=True)
    labels = np.asarray(nib.load(reference).dataobj).astype(np.uint8)
    labels[0, 0, 0] = 7
    _rewrite(reference, labels)
    return Expected("phantom002", (reference.name, "7"))


def reference_shape_mismatch(template: Path, cohort: Path) -> Expected:
    reference = _frame(_patient(template, cohort, "phantom002"), gt=True)
    labels = np.asarray(nib.load(reference).dataobj).astype(np.uint8)
    _rewrite(reference, labels[:-4])
    return Expected("phantom002", (reference.name, "shape"))


def info_cfg_missing(template: Path, cohort: Path) -> Expected:
    (_patient(template, cohort, "phantom002") / "Info.cfg").unlink()
    return Expected("phantom002", ("no Info.cfg",), stopped_at="discovery")


def info_cfg_empty(template: Path, cohort: Path) -> Expected:
    (_patient(template, cohort, "phantom002") / "Info.cfg").write_text("")
    return Expected("phantom002", ("Info.cfg", "missing"))


def ed_beyond_nbframe(template: Path, cohort: Path) -> Expected:
    info = _patient(template, cohort, "phantom002") / "Info.cfg"
    info.write_text(info.read_text().replace("ED: 1", "ED: 30"))
    return Expected("phantom002", ("Info.cfg", "30"))


def empty_folder(template: Path, cohort: Path) -> Expected:
    (cohort / "phantom002").mkdir(parents=True)
    return Expected("phantom002", ("empty folder",), stopped_at="discovery")


def symlink_loop(template: Path, cohort: Path) -> Expected:
    cohort.mkdir(parents=True, exist_ok=True)
    os.symlink(cohort / "loop", cohort / "loop")
    return Expected("loop", ("cannot be read", "symbolic links"), stopped_at="discovery")


def not_an_image(template: Path, cohort: Path) -> Expected:
    cohort.mkdir(parents=True, exist_ok=True)
    (cohort / "notes.txt").write_text("scanned on Tuesday")
    return Expected("notes.txt", ("not a NIfTI file",), stopped_at="discovery")


def loose_nifti_not_gzip(template: Path, cohort: Path) -> Expected:
    cohort.mkdir(parents=True, exist_ok=True)
    (cohort / "loose.nii.gz").write_bytes(gzip.compress(b"not a NIfTI header")[:20])
    return Expected("loose.nii.gz", ("loose.nii.gz", "corrupt or truncated"))


def name_too_long(template: Path, cohort: Path) -> Expected:
    name = "p" * 230  # a folder name the file system allows, longer than the record keeps
    _patient(template, cohort, name)
    return Expected(name, ("230 characters", "at most 200"), stopped_at="submit")


def _series(cohort: Path, name: str) -> list[Path]:
    """A copy of the real Sunnybrook cine series in ``cohort/name``, its files in instance order."""
    source = require_shared(Settings().shared_data / "sunnybrook" / "SCD0000101", "Sunnybrook series")
    return copy_series(source, cohort / name)


def dicom_truncated_image(template: Path, cohort: Path) -> Expected:
    files = _series(cohort, "SCD-truncated")
    files[30].write_bytes(files[30].read_bytes()[:20000])
    return Expected("SCD-truncated", (files[30].name,))


def dicom_mixed_series(template: Path, cohort: Path) -> Expected:
    files = _series(cohort, "SCD-mixed")
    for path in files[::3]:  # the larger series left has 13 or 14 phases per slice
        edit(path, SeriesInstanceUID="1.2.826.0.1.3680043.8.498.1")
    return Expected("SCD-mixed", ("SCD-mixed", "the folder holds 2 series", "keep one cine series per folder"))


def dicom_not_mr(template: Path, cohort: Path) -> Expected:
    files = _series(cohort, "SCD-ct")
    edit(files[3], Modality="CT")
    return Expected("SCD-ct", (files[3].name, "modality is 'CT'"))


CASES: dict[str, Callable[[Path, Path], Expected]] = {case.__name__: case for case in (
    truncated_gzip, not_gzip, zero_byte_frame, missing_frame, image_2d, image_5d, nan_voxels, labels_outside_acdc,
    reference_shape_mismatch, info_cfg_missing, info_cfg_empty, ed_beyond_nbframe, empty_folder, symlink_loop,
    not_an_image, loose_nifti_not_gzip, name_too_long, dicom_truncated_image, dicom_mixed_series, dicom_not_mr,
)}


@dataclass
class Outcome:
    skipped: dict[str, str]
    refused: dict[str, str]
    studies: dict[str, tuple[StudyStatus, str | None]]


def run_cohort(tmp_path: Path, cohort: Path, oracle: Oracle, run: str = "bad-input") -> Outcome:
    """Discover, submit and run both stages on every study, as the workers would."""
    work = tmp_path / "work"
    settings = Settings(trusted_model_roots=[tmp_path / "models"], cache_dir=work / "cache",
                        results_uri=str(work / "results"))
    work.mkdir(exist_ok=True)
    engine = open_record(f"sqlite:///{work / 'record.db'}")
    discovery = discover_studies(str(cohort), settings)
    submission = submit_sources(engine, settings, name=run, source_uri=str(cohort), sources=discovery.sources,
                                model_dir=tmp_path / "models" / "Dataset001_X" / "nnUNetTrainer__nnUNetPlans__2d")
    ctx = StageContext(engine, LocalStore(work / "results"), settings)
    model = ModelInfo(submission.fingerprint, oracle)
    for study_id in submission.study_ids:
        if segment_stage(ctx, study_id, model, worker="t"):
            evaluate_stage(ctx, study_id)
    with session_scope(engine) as session:
        rows = session.execute(select(Study.source_uri, Study.status, Study.error)).all()
    engine.dispose()
    return Outcome({Path(e).name: r for e, r in discovery.skipped}, {Path(s).name: r for s, r in submission.refused},
                   {Path(uri).name: (status, error) for uri, status, error in rows})


@pytest.mark.parametrize("case", CASES)
def test_a_bad_study_is_stopped_with_its_reason_and_the_cohort_goes_on(case: str, template: Path,
                                                                       tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    _patient(template, cohort, GOOD)
    expected = CASES[case](template, cohort)
    fake_model(tmp_path / "models")
    oracle = Oracle([cohort / GOOD])
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("untouched")

    before = snapshot(tmp_path)
    outcome = run_cohort(tmp_path, cohort, oracle)

    assert outcome.studies[GOOD] == (StudyStatus.DONE, None)
    if expected.stopped_at == "discovery":
        reason = outcome.skipped[expected.entry]
        assert expected.entry not in outcome.studies
    elif expected.stopped_at == "submit":
        reason = outcome.refused[expected.entry]
        assert expected.entry not in outcome.studies
    else:
        status, error = outcome.studies[expected.entry]
        assert status == StudyStatus.FAILED
        reason = str(error)
    for fragment in expected.says:
        assert fragment in reason, reason
    assert "Traceback" not in reason
    assert changed_outside(before, snapshot(tmp_path), [tmp_path / "work"]) == []  # nothing else touched
    assert (tmp_path / "outside" / "keep.txt").read_text() == "untouched"


def test_names_with_quotes_unicode_and_dot_segments_are_kept_and_stay_inside_the_results(
        template: Path, tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    _patient(template, cohort, GOOD)
    odd = "O'Brien \"Ä\" 患者 .."
    _patient(template, cohort, odd)
    fake_model(tmp_path / "models")
    before = snapshot(tmp_path)
    outcome = run_cohort(tmp_path, cohort, Oracle([cohort / GOOD, cohort / odd]), run="../../etc 'x' \"y\" ü")
    assert outcome.studies == {GOOD: (StudyStatus.DONE, None), odd: (StudyStatus.DONE, None)}
    assert changed_outside(before, snapshot(tmp_path), [tmp_path / "work"]) == []
    engine = open_record(f"sqlite:///{tmp_path / 'work' / 'record.db'}")
    with session_scope(engine) as session:
        names = set(session.execute(select(Study.patient_id)).scalars())
    engine.dispose()
    assert names == {GOOD, odd}  # the record keeps the exact name


def test_a_run_name_longer_than_the_record_keeps_is_refused_before_anything_is_recorded(
        template: Path, tmp_path: Path) -> None:
    from db.records import RecordError

    cohort = tmp_path / "cohort"
    _patient(template, cohort, GOOD)
    fake_model(tmp_path / "models")
    with pytest.raises(RecordError, match=r"run name 'r{60}'\.\.\. has 300 characters; the record keeps at most 200"):
        run_cohort(tmp_path, cohort, Oracle([cohort / GOOD]), run="r" * 300)
