"""``heartseg predict`` on hostile images: a frame whose header spacing would resample it to an enormous array
is refused before anything is allocated, as that file's error, and the folder's other files are segmented."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from heartseg.errors import StudyError
from heartseg.settings import Settings
from workers.inference.predictor import MAX_RESAMPLED_VOXELS, Segmenter


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter.from_settings(Settings(device="cpu", use_mirroring=False))


def test_resampled_shape_follows_the_models_spacing(segmenter: Segmenter) -> None:
    # the shipped 2D model resamples in-plane to 1.5625 mm and keeps the slices
    assert segmenter.resampled_shape((232, 256, 11), (1.758, 1.758, 10.0)) == (261, 288, 11)
    assert segmenter.resampled_shape((256, 256, 10), (100.0, 100.0, 10.0)) == (16384, 16384, 10)
    for spacing in ((0.0, 1.0, 1.0), (float("nan"), 1.0, 1.0), (1.0, float("inf"), 1.0), (-1.0, 1.0, 1.0)):
        with pytest.raises(StudyError, match="not positive and finite"):
            segmenter.resampled_shape((8, 8, 2), spacing)


def test_a_frame_too_large_once_resampled_is_refused_before_allocating(segmenter: Segmenter,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # 19 mm pixels pass a plausible-spacing check (20 mm), yet a 512 x 512 x 20 frame would become 775 M voxels
    image = np.zeros((512, 512, 20), np.float32)
    with pytest.raises(StudyError, match=r"512x512x20 voxels of 19x19x10 mm would be 6226x6226x20 = 775,261,520 "
                                         r"voxels .* more than the 67,108,864"):
        segmenter.segment(image, (19.0, 19.0, 10.0))
    monkeypatch.setattr(segmenter, "max_resampled_voxels", 1000)
    with pytest.raises(StudyError, match=r"^tiny.nii.gz: 32x32x2 voxels .* more than the 1,000 segmented"):
        segmenter.check_size((32, 32, 2), (1.5625, 1.5625, 10.0), "tiny.nii.gz")


@pytest.mark.acdc
def test_every_acdc_frame_is_within_the_bound(segmenter: Segmenter, acdc_root: Path) -> None:
    largest = 0
    for path in sorted(acdc_root.glob("patient*/patient*_frame??.nii.gz")):
        header = nib.load(path).header
        shape = math.prod(segmenter.resampled_shape(header.get_data_shape()[:3], header.get_zooms()[:3]))
        largest = max(largest, shape)
    assert 0 < largest < MAX_RESAMPLED_VOXELS / 50  # the bound leaves room for far larger real frames


@pytest.mark.acdc
def test_predict_reports_the_absurd_spacing_and_segments_the_rest(tmp_path: Path) -> None:
    from heartseg.phantom import draw_parameters, write_patient

    write_patient(tmp_path / "cohort" / "phantom001", draw_parameters("phantom001", np.random.default_rng(21)))
    images = tmp_path / "in"
    images.mkdir()
    source = tmp_path / "cohort" / "phantom001" / "phantom001_frame01.nii.gz"
    shutil.copyfile(source, images / "good_0000.nii.gz")
    frame = nib.load(source)
    header = frame.header.copy()
    header.set_zooms((100.0, 100.0, *header.get_zooms()[2:]))
    nib.save(nib.Nifti1Image(np.asarray(frame.dataobj), frame.affine, header), images / "huge_0000.nii.gz")

    result = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "predict", str(images), str(tmp_path / "out"), "--no-tta"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "segmented 1 of 2 images" in result.stdout
    stderr = " ".join(result.stderr.split())  # rich wraps long lines
    assert "huge_0000.nii.gz" in stderr and "= 100 mm is outside the plausible range 0.1-20 mm" in stderr
    assert not (tmp_path / "out" / "huge.nii.gz").exists()
    good = nib.load(tmp_path / "out" / "good.nii.gz")
    assert good.shape == frame.shape and np.allclose(good.affine, frame.affine)
    assert set(np.unique(np.asarray(good.dataobj))) <= {0, 1, 2, 3} and np.asarray(good.dataobj).any()
