"""Bad input raises StudyError with a message naming the file and what is wrong."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from heartseg.errors import HeartSegError, StudyError
from heartseg.studies import open_study
from heartseg.studies.acdc import load_acdc_patient
from tests.conftest import write_nifti

SHAPE = (12, 10, 4)


def make_patient(root: Path, name: str = "patient900", info: str | None = None) -> Path:
    """A small valid ACDC patient folder: frames 1 (ED) and 5 (ES) with references."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "Info.cfg").write_text(
        info if info is not None else "ED: 1\nES: 5\nGroup: NOR\nHeight: 180.0\nNbFrame: 10\nWeight: 80.0\n"
    )
    rng = np.random.default_rng(1)
    labels = np.zeros(SHAPE, np.uint8)
    labels[3:8, 3:7, 1:3] = 3
    for number in (1, 5):
        write_nifti(folder / f"{name}_frame{number:02d}.nii.gz", rng.random(SHAPE).astype(np.float32))
        write_nifti(folder / f"{name}_frame{number:02d}_gt.nii.gz", labels)
    return folder


def expect_error(folder_or_file: Path, *fragments: str) -> StudyError:
    with pytest.raises(StudyError) as caught:
        open_study(folder_or_file)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return caught.value


def test_a_valid_patient_loads(tmp_path: Path) -> None:
    study = load_acdc_patient(make_patient(tmp_path))
    assert study.frame_numbers == (1, 5) and study.ed == 1 and study.es == 5
    assert isinstance(StudyError("x", "y"), HeartSegError)


def test_missing_image_file(tmp_path: Path) -> None:
    folder = make_patient(tmp_path)
    (folder / "patient900_frame05.nii.gz").unlink()
    expect_error(folder, "patient900_frame05.nii.gz", "file not found")


def test_truncated_gzip(tmp_path: Path) -> None:
    folder = make_patient(tmp_path)
    path = folder / "patient900_frame01.nii.gz"
    path.write_bytes(path.read_bytes()[:200])
    expect_error(folder, "patient900_frame01.nii.gz", "corrupt or truncated")


def test_corrupt_gzip(tmp_path: Path) -> None:
    folder = make_patient(tmp_path)
    path = folder / "patient900_frame01.nii.gz"
    raw = bytearray(path.read_bytes())
    raw[40:80] = b"\x00" * 40
    path.write_bytes(bytes(raw))
    expect_error(folder, "patient900_frame01.nii.gz", "corrupt or truncated")


def test_not_a_nifti(tmp_path: Path) -> None:
    folder = make_patient(tmp_path)
    (folder / "patient900_frame01.nii.gz").write_bytes(gzip.compress(b"this is a text file, not an image" * 20))
    expect_error(folder, "patient900_frame01.nii.gz", "not a NIfTI")


def test_2d_image(tmp_path: Path) -> None:
    folder = make_patient(tmp_path)
    write_nifti(folder / "patient900_frame01.nii.gz", np.zeros((12, 10), np.float32), spacing=(1.5, 1.5))
    expect_error(folder, "patient900_frame01.nii.gz", "expected a 3D image, found 2D")


def test_image_reference_shape_mismatch(tmp_path: Path) -> None:
    folder = make_patient(tmp_path)
    write_nifti(folder / "patient900_frame05_gt.nii.gz", np.zeros((12, 10, 5), np.uint8))
    expect_error(folder, "patient900_frame05_gt.nii.gz", "reference shape (12, 10, 5) differs from image shape")


def test_image_reference_affine_mismatch(tmp_path: Path) -> None:
    folder = make_patient(tmp_path)
    shifted = np.diag([1.5, 1.5, 10.0, 1.0])
    shifted[:3, 3] = (0.0, 0.0, 5.0)
    write_nifti(folder / "patient900_frame05_gt.nii.gz", np.zeros(SHAPE, np.uint8), affine=shifted)
    expect_error(folder, "patient900_frame05_gt.nii.gz", "reference affine differs")


def test_reference_labels_outside_acdc(tmp_path: Path) -> None:
    folder = make_patient(tmp_path)
    labels = np.zeros(SHAPE, np.uint8)
    labels[0, 0, 0] = 4
    labels[1, 0, 0] = 7
    write_nifti(folder / "patient900_frame01_gt.nii.gz", labels)
    expect_error(folder, "patient900_frame01_gt.nii.gz", "values [4, 7] outside the ACDC labels")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_intensities(tmp_path: Path, bad: float) -> None:
    folder = make_patient(tmp_path)
    data = np.ones(SHAPE, np.float32)
    data[2, 2, 2] = bad
    write_nifti(folder / "patient900_frame05.nii.gz", data)
    expect_error(folder, "patient900_frame05.nii.gz", "1 voxels have NaN or infinite intensity")


def test_info_cfg_missing_field(tmp_path: Path) -> None:
    folder = make_patient(tmp_path, info="ED: 1\nES: 5\nGroup: NOR\nHeight: 180\nWeight: 80\n")
    expect_error(folder, "Info.cfg", "missing field(s) NbFrame")


@pytest.mark.parametrize(("ed", "es", "what"), [(0, 5, "ED = 0"), (1, 11, "ES = 11"), (3, 3, "same frame")])
def test_info_cfg_ed_es_out_of_range(tmp_path: Path, ed: int, es: int, what: str) -> None:
    info = f"ED: {ed}\nES: {es}\nGroup: NOR\nHeight: 180\nNbFrame: 10\nWeight: 80\n"
    expect_error(make_patient(tmp_path, info=info), "Info.cfg", what)


def test_info_cfg_missing(tmp_path: Path) -> None:
    folder = make_patient(tmp_path)
    (folder / "Info.cfg").unlink()
    with pytest.raises(StudyError, match=r"Info\.cfg not found"):
        load_acdc_patient(folder)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "patient901").mkdir()
    expect_error(tmp_path / "patient901", "patient901", "study folder is empty")


def test_unknown_file_type(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    expect_error(path, "notes.txt", "not a study")
