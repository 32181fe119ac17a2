"""The DICOM cine reader on the real Sunnybrook GE series, and its refusals of bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from heartseg.errors import StudyError
from heartseg.settings import Settings
from heartseg.studies import open_study
from heartseg.studies.dicom import group_slices, load_dicom_cine, read_image, read_series
from tests.conftest import require_shared


@pytest.fixture(scope="module")
def series_dir() -> Path:
    return require_shared(Settings().shared_data / "sunnybrook" / "SCD0000101", "Sunnybrook series")


def test_sunnybrook_loads_with_shape_spacing_and_phase_order(series_dir: Path) -> None:
    study = open_study(series_dir)
    assert study.shape == (256, 256, 12) and len(study.frames) == 20
    assert study.spacing[:2] == pytest.approx((1.367188, 1.367188))
    assert study.spacing[2] == pytest.approx(10.0, abs=1e-3)  # from positions, not SliceThickness
    slices = group_slices([read_image(p) for p in read_series(series_dir)[next(iter(read_series(series_dir)))]])
    for group in slices:
        times = [im.trigger_time for im in group]
        assert times == sorted(times) and len(times) == 20
    # trigger times differ from slice to slice in real data
    assert len({round(g[1].trigger_time, 3) for g in slices}) > 1


def test_geometry_agrees_with_simpleitk(series_dir: Path) -> None:
    study = load_dicom_cine(series_dir)
    uid = next(iter(read_series(series_dir)))
    slices = group_slices([read_image(p) for p in read_series(series_dir)[uid]])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(group[0].path) for group in slices])
    image = reader.Execute()
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ study.affine
    for index in [(0, 0, 0), (255, 0, 0), (0, 255, 11), (255, 255, 11), (128, 77, 6)]:
        ours = (lps @ np.array([*index, 1.0]))[:3]
        theirs = np.array(image.TransformIndexToPhysicalPoint(index))
        assert np.abs(ours - theirs).max() < 0.01
    assert study.spacing == pytest.approx(image.GetSpacing(), abs=0.01)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), study.frame(1).image)


def test_convert_writes_a_4d_nifti(series_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cine.nii.gz"
    result = subprocess.run([sys.executable, "-m", "scheduler.cli", "convert", str(series_dir), str(out)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    image = nib.load(out)
    assert image.shape == (256, 256, 12, 20)
    np.testing.assert_allclose(image.affine, load_dicom_cine(series_dir).affine, atol=1e-4)


def copy_series(series_dir: Path, target: Path, limit: int | None = None) -> list[Path]:
    target.mkdir(parents=True)
    files = sorted(series_dir.iterdir(), key=lambda p: int(p.stem))[:limit]
    return [Path(shutil.copy(f, target / f.name)) for f in files]


def edit(path: Path, **tags: object) -> None:
    dataset = pydicom.dcmread(path)
    for name, value in tags.items():
        if value is None:
            delattr(dataset, name)
        else:
            setattr(dataset, name, value)
    dataset.save_as(path)


def test_non_mr_modality_is_refused(series_dir: Path, tmp_path: Path) -> None:
    files = copy_series(series_dir, tmp_path / "s")
    edit(files[3], Modality="CT")
    with pytest.raises(StudyError, match=rf"{files[3].name}: modality is 'CT'"):
        load_dicom_cine(tmp_path / "s")


@pytest.mark.parametrize("tag", ["ImagePositionPatient", "PixelSpacing"])
def test_missing_geometry_is_refused(series_dir: Path, tmp_path: Path, tag: str) -> None:
    files = copy_series(series_dir, tmp_path / "s")
    edit(files[0], **{tag: None})
    with pytest.raises(StudyError, match=f"missing {tag}"):
        load_dicom_cine(tmp_path / "s")


def test_mixed_series_are_split(series_dir: Path, tmp_path: Path) -> None:
    files = copy_series(series_dir, tmp_path / "s")
    for path in files[:20]:
        edit(path, SeriesInstanceUID="1.2.3.4.5")
    series = read_series(tmp_path / "s")
    assert sorted(len(v) for v in series.values()) == [20, 220]  # files 1-20: one slice, all its phases
    assert load_dicom_cine(tmp_path / "s").shape == (256, 256, 11)  # default: the largest series
    single = load_dicom_cine(tmp_path / "s", series_uid="1.2.3.4.5")
    assert single.shape == (256, 256, 1) and len(single.frames) == 20


def test_unequal_phase_counts_are_refused(series_dir: Path, tmp_path: Path) -> None:
    files = copy_series(series_dir, tmp_path / "s")
    files[7].unlink()
    with pytest.raises(StudyError, match="unequal numbers of phases"):
        load_dicom_cine(tmp_path / "s")


def test_truncated_file_is_refused(series_dir: Path, tmp_path: Path) -> None:
    files = copy_series(series_dir, tmp_path / "s")
    files[5].write_bytes(files[5].read_bytes()[:3000])
    with pytest.raises(StudyError, match=files[5].name):
        load_dicom_cine(tmp_path / "s")


def test_compressed_syntax_without_decoder_is_refused(series_dir: Path, tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    files = copy_series(series_dir, tmp_path / "s")
    dataset = pydicom.dcmread(files[2])
    dataset.PixelData = encapsulate([b"\x00" * 64])
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = JPEG2000Lossless
    dataset.save_as(files[2], enforce_file_format=True)
    with pytest.raises(StudyError, match=rf"{files[2].name}: cannot decode the pixel data \(transfer syntax"):
        load_dicom_cine(tmp_path / "s")


def test_contours_become_reference_labels(series_dir: Path) -> None:
    from heartseg.studies.sunnybrook import contour_references

    references = contour_references(series_dir, series_dir.parent / "SCD0000101_contours")
    assert len(references) == 18  # every i-contour file
    assert sum(r.has_myocardium for r in references) == 9  # every o-contour file
    study = load_dicom_cine(series_dir)
    for ref in references:
        assert ref.labels.shape == study.shape[:2]
        assert (ref.labels == 3).sum() > 100
        assert ((ref.labels == 2).sum() > 0) == ref.has_myocardium
        # the image the contour was drawn on is the one the reader placed at (slice, phase)
        dataset = pydicom.dcmread(series_dir / f"{ref.instance}.dcm")
        np.testing.assert_array_equal(dataset.pixel_array.T.astype(np.float32),
                                      study.frame(ref.phase).image[:, :, ref.slice_index])


def test_one_series_per_slice_is_joined_into_one_stack(series_dir: Path, tmp_path: Path) -> None:
    files = copy_series(series_dir, tmp_path / "s")
    positions = sorted({tuple(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient) for f in files})
    for path in files:  # as some exports write a short-axis cine: each slice position its own series
        position = tuple(pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient)
        edit(path, SeriesInstanceUID=f"1.2.826.0.1.3680043.8.498.{positions.index(position) + 1}")
    assert len(read_series(tmp_path / "s")) == 12
    joined, original = load_dicom_cine(tmp_path / "s"), load_dicom_cine(series_dir)
    assert joined.shape == original.shape == (256, 256, 12) and len(joined.frames) == 20
    assert joined.spacing == original.spacing and np.array_equal(joined.affine, original.affine)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(joined.frames, original.frames, strict=True))
    one = load_dicom_cine(tmp_path / "s", series_uid="1.2.826.0.1.3680043.8.498.3")  # a named series alone
    assert one.shape == (256, 256, 1)
