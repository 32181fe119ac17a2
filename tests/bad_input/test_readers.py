"""Hostile input to the study readers: implausible geometry, images without signal, broken DICOM stacks.

Every refusal is a StudyError whose message names the file (or folder) and the problem; files beside a
DICOM series that are not images of it are passed over, not refused.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from heartseg.errors import StudyError
from heartseg.settings import Settings
from heartseg.studies import GeometryLimits, open_study
from heartseg.studies.dicom import ORIENTATION_TOLERANCE, group_slices, load_dicom_cine, read_image, read_series
from heartseg.studies.nifti_files import load_nifti_study
from heartseg.studies.nnunet_raw import load_nnunet_study
from tests.conftest import require_shared, write_nifti
from tests.test_dicom import copy_series, edit
from tests.test_studies_errors import make_patient

SHAPE = (12, 10, 4)


def expect_refusal(path: Path, *fragments: str, limits: GeometryLimits | None = None) -> str:
    """Open ``path`` (any reader), expect a StudyError and every fragment in its message; return the message."""
    with pytest.raises(StudyError) as caught:
        open_study(path, limits=limits)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def image(shape: tuple[int, ...] = SHAPE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32) * 100


def set_pixdim(path: Path, spacing: tuple[float, float, float]) -> Path:
    """Write ``spacing`` into the stored header (pixdim[1:4]) as is, past nibabel's header fixes."""
    compressed = path.name.endswith(".gz")
    raw = bytearray(gzip.decompress(path.read_bytes()) if compressed else path.read_bytes())
    struct.pack_into("<3f", raw, 80, *spacing)  # pixdim is float32[8] at byte 76: pixdim[1] at 80
    path.write_bytes(gzip.compress(bytes(raw)) if compressed else bytes(raw))
    return path


# --- NIfTI geometry: every reader (NIfTI file, ACDC folder, nnU-Net raw dataset) ---

def test_nifti_spacing_zero_is_refused_not_read_as_one(tmp_path: Path) -> None:
    path = set_pixdim(write_nifti(tmp_path / "case.nii.gz", image()), (1.5, 1.5, 0.0))
    expect_refusal(path, "case.nii.gz", "pixdim", "(1.5, 1.5, 0)", "a spacing of 0")
    folder = make_patient(tmp_path / "acdc")
    set_pixdim(folder / "patient900_frame01.nii.gz", (0.0, 0.0, 0.0))
    expect_refusal(folder, "patient900_frame01.nii.gz", "a spacing of 0")


@pytest.mark.parametrize(("spacing", "fragments"), [
    ((1e-4, 1e-4, 10.0), ["in-plane spacing x = 0.0001 mm", "0.1-20 mm", "HEARTSEG_MIN_INPLANE_SPACING_MM"]),
    ((1.5, 1.5, 100.0), ["between-slice spacing z = 100 mm", "0.5-30 mm", "HEARTSEG_MAX_SLICE_SPACING_MM"]),
])
def test_nifti_implausible_spacing_is_refused(tmp_path: Path, spacing: tuple[float, float, float],
                                               fragments: list[str]) -> None:
    path = set_pixdim(write_nifti(tmp_path / "case.nii.gz", image()), spacing)
    expect_refusal(path, "case.nii.gz", *fragments)
    folder = make_patient(tmp_path / "acdc")
    set_pixdim(folder / "patient900_frame05.nii.gz", spacing)
    expect_refusal(folder, "patient900_frame05.nii.gz", *fragments)
    raw = tmp_path / "Dataset900_Bad"
    write_nifti(raw / "imagesTr" / "case_0000.nii.gz", image())
    set_pixdim(raw / "imagesTr" / "case_0000.nii.gz", spacing)
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "cineMRI"}, "file_ending": ".nii.gz"}))
    with pytest.raises(StudyError, match=r"case_0000\.nii\.gz: voxel spacing in the header"):
        load_nnunet_study(raw, "case")
    # the limits are settings: wider ones accept the same file
    wide = GeometryLimits(min_inplane_mm=1e-5, max_slice_mm=200.0)
    assert open_study(path, limits=wide).spacing == pytest.approx(spacing)


def test_nifti_nan_spacing_is_refused(tmp_path: Path) -> None:
    path = set_pixdim(write_nifti(tmp_path / "case.nii.gz", image()), (1.5, float("nan"), 10.0))
    expect_refusal(path, "case.nii.gz", "y spacing nan is not a positive finite number")


def test_spacing_limits_come_from_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MIN_INPLANE", "MAX_INPLANE", "MIN_SLICE", "MAX_SLICE"):
        monkeypatch.delenv(f"HEARTSEG_{name}_SPACING_MM", raising=False)
    assert GeometryLimits.from_settings(Settings()) == GeometryLimits()
    monkeypatch.setenv("HEARTSEG_MAX_SLICE_SPACING_MM", "120")
    limits = GeometryLimits.from_settings(Settings())
    assert limits.max_slice_mm == 120.0 and limits.min_inplane_mm == GeometryLimits().min_inplane_mm
    path = set_pixdim(write_nifti(tmp_path / "case.nii.gz", image()), (1.5, 1.5, 100.0))
    assert open_study(path, limits=limits).spacing[2] == pytest.approx(100.0)
    monkeypatch.setenv("HEARTSEG_MIN_SLICE_SPACING_MM", "150")
    with pytest.raises(ValueError, match="HEARTSEG_MIN_SLICE_SPACING_MM"):
        Settings()


def test_nifti_2d_image_is_refused(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "flat.nii.gz", image((12, 10)), spacing=(1.5, 1.5))
    expect_refusal(path, "flat.nii.gz", "expected a 3D or 4D image, found 2D")


def test_nifti_5d_image_is_refused(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "five.nii.gz", image((12, 10, 4, 3, 2)))
    expect_refusal(path, "five.nii.gz", "expected a 3D or 4D image, found 5D with shape (12, 10, 4, 3, 2)")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nifti_nan_or_infinite_voxels_are_refused(tmp_path: Path, bad: float) -> None:
    cine = image((*SHAPE, 4))
    cine[3, 4, 1, 2] = bad
    path = write_nifti(tmp_path / "cine.nii.gz", cine)
    expect_refusal(path, "cine.nii.gz", "frame 3: 1 voxels have NaN or infinite intensity")


def test_image_without_signal_is_refused(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "zeros.nii.gz", np.zeros(SHAPE, np.float32))
    expect_refusal(path, "zeros.nii.gz", "no signal: every voxel of the image is 0")
    cine = image((*SHAPE, 4))
    cine[..., 1] = 7.0
    path = write_nifti(tmp_path / "cine.nii.gz", cine)
    expect_refusal(path, "cine.nii.gz", "frame 2: no signal: every voxel of the image is 7")
    folder = make_patient(tmp_path / "acdc")
    write_nifti(folder / "patient900_frame05.nii.gz", np.zeros(SHAPE, np.float32))
    expect_refusal(folder, "patient900_frame05.nii.gz", "no signal")
    with pytest.raises(StudyError, match=r"zeros\.nii\.gz: no signal"):
        load_nifti_study(tmp_path / "zeros.nii.gz")


# --- DICOM: the real Sunnybrook series (12 slices x 20 phases) copied and edited ---

@pytest.fixture(scope="module")
def series_dir() -> Path:
    return require_shared(Settings().shared_data / "sunnybrook" / "SCD0000101", "Sunnybrook series")


def stack(folder: Path) -> list[list[Path]]:
    """The files of each slice (ascending position), phases in time order."""
    uid = next(iter(read_series(folder)))
    return [[im.path for im in group] for group in group_slices([read_image(p) for p in read_series(folder)[uid]])]


def test_dicom_missing_slice_is_refused(series_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "s"
    copy_series(series_dir, folder)
    for path in stack(folder)[5]:
        path.unlink()
    expect_refusal(folder, str(folder), "slice positions are not evenly spaced", "a gap of 20.00 mm",
                   "median gap is 10.00 mm", "a missing slice")


@pytest.mark.parametrize(("shift_mm", "fragment"), [(0.0, "duplicated slice"),
                                                    (3.0, "not evenly spaced: a gap of 3.00 mm")])
def test_dicom_duplicated_slice_is_refused(series_dir: Path, tmp_path: Path, shift_mm: float, fragment: str) -> None:
    folder = tmp_path / "s"
    copy_series(series_dir, folder)
    for path in stack(folder)[4]:  # the slice again, as new images (at its position, or 3 mm along the normal)
        dataset = pydicom.dcmread(path)
        cosines = np.asarray([float(v) for v in dataset.ImageOrientationPatient])
        normal = np.cross(cosines[:3], cosines[3:])
        position = np.asarray([float(v) for v in dataset.ImagePositionPatient]) + shift_mm * normal
        dataset.ImagePositionPatient = [f"{v:.6f}" for v in position]
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.InstanceNumber = int(dataset.InstanceNumber) + 1000
        dataset.save_as(folder / f"again_{path.name}")
    expect_refusal(folder, fragment, "again_")


def test_dicom_one_file_without_trigger_time_is_refused(series_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "s"
    files = copy_series(series_dir, folder)
    edit(files[37], TriggerTime=None)
    expect_refusal(folder, f"{files[37].name}: no TriggerTime, while 239 of the series' 240 images have one")


def test_dicom_without_any_trigger_time_orders_by_instance_number(series_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "s"
    files = copy_series(series_dir, folder, limit=60)  # three slices
    timed = load_dicom_cine(folder)
    for path in files:
        edit(path, TriggerTime=None)
    numbered = load_dicom_cine(folder)
    assert numbered.frame_numbers == timed.frame_numbers
    for a, b in zip(numbered.frames, timed.frames, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
    edit(files[3], InstanceNumber=int(pydicom.dcmread(files[4]).InstanceNumber))  # two images, one phase number
    expect_refusal(folder, "duplicated slice", "InstanceNumber")


def set_orientation(path: Path, delta: float) -> None:
    dataset = pydicom.dcmread(path)
    cosines = [float(v) for v in dataset.ImageOrientationPatient]
    cosines[0] += delta
    dataset.ImageOrientationPatient = [f"{v:.8f}" for v in cosines]
    dataset.save_as(path)


def test_dicom_orientation_beyond_the_tolerance_is_refused(series_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "s"
    files = copy_series(series_dir, folder, limit=60)
    set_orientation(files[25], 1e-2)
    expect_refusal(folder, f"{files[25].name}: ImageOrientationPatient differs from", f"by 0.01, more than the "
                   f"tolerance {ORIENTATION_TOLERANCE:g}")


def test_dicom_orientation_within_the_tolerance_is_accepted(series_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "s"
    files = copy_series(series_dir, folder, limit=60)
    set_orientation(files[25], 1e-6)
    assert ORIENTATION_TOLERANCE > 1e-6
    study = open_study(folder)
    assert study.shape == (256, 256, 3) and len(study.frames) == 20


def test_dicom_pixel_spacing_differing_within_the_stack_is_refused(series_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "s"
    files = copy_series(series_dir, folder, limit=60)
    edit(files[44], PixelSpacing=["1.4", "1.4"])
    expect_refusal(folder, f"{files[44].name}: PixelSpacing [1.4, 1.4] differs from")


def test_dicom_implausible_spacing_is_refused(series_dir: Path) -> None:
    expect_refusal(series_dir, str(series_dir), "in-plane spacing x = 1.36719 mm", "2-20 mm",
                   limits=GeometryLimits(min_inplane_mm=2.0))
    expect_refusal(series_dir, "between-slice spacing z = 9.99", "0.5-8 mm",
                   limits=GeometryLimits(max_slice_mm=8.0))


def test_dicom_phase_without_signal_is_refused(series_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "s"
    copy_series(series_dir, folder, limit=60)
    for path in [group[6] for group in stack(folder)]:  # phase 7 of every slice
        dataset = pydicom.dcmread(path)
        dataset.PixelData = np.zeros_like(dataset.pixel_array).tobytes()
        dataset.save_as(path)
    expect_refusal(folder, str(folder), "frame 7: no signal: every voxel of the image is 0")


def test_dicom_files_beside_the_images_are_ignored(series_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "s"
    files = copy_series(series_dir, folder, limit=60)
    (folder / "00_README.txt").write_text("Sunnybrook SCD0000101, exported for a test\n")  # sorts first
    (folder / "000_empty").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        directory = pydicom.dcmread(files[0])
        directory.StudyID = "1"
        file_set = FileSet()
        file_set.add(directory)
        file_set.write(tmp_path / "media")
    shutil.copy(tmp_path / "media" / "DICOMDIR", folder / "DICOMDIR")
    report = pydicom.dcmread(files[0])  # same series, no pixel data: a structured report, say
    for keyword in ("PixelData", "Rows", "Columns"):
        delattr(report, keyword)
    report.SOPInstanceUID = generate_uid()
    report.save_as(folder / "report.dcm")
    study = open_study(folder)
    assert study.shape == (256, 256, 3) and len(study.frames) == 20
    assert study.dicom_files is not None
    assert all(Path(p).name.endswith(".dcm") and Path(p).name != "report.dcm"
               for paths in study.dicom_files.values() for p in paths)


def test_dicom_patient_size_weight_and_heart_rate_are_read(series_dir: Path, tmp_path: Path) -> None:
    info = open_study(series_dir).info
    assert info.heart_rate_bpm == 79.0  # the median of Sunnybrook's own, one per slice (breath-hold): 75-82
    assert info.height_cm is None and info.weight_kg is None  # not in Sunnybrook's headers
    folder = tmp_path / "s"
    files = copy_series(series_dir, folder, limit=60)
    edit(files[5], PatientSize="1.82", PatientWeight="77.5")
    for path in files:
        edit(path, HeartRate="64")
    info = open_study(folder).info
    assert info.height_cm == pytest.approx(182.0)  # metres -> cm
    assert info.weight_kg == pytest.approx(77.5)
    assert info.heart_rate_bpm == 64.0
    edit(files[5], PatientSize="182", PatientWeight="0")  # centimetres in a metres tag; 0 for unknown
    for path in files:
        edit(path, HeartRate="900")
    info = open_study(folder).info
    assert info.height_cm is None and info.weight_kg is None and info.heart_rate_bpm is None
