"""nnU-Net raw datasets and plain 3D/4D NIfTI files load into the same study model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from heartseg.studies.nifti_files import load_nifti_study
from heartseg.studies.nnunet_raw import is_nnunet_raw_dataset, list_cases, load_nnunet_study
from tests.conftest import write_nifti


def _raw_dataset(root: Path, acdc_root: Path, patients: list[str]) -> Path:
    folder = root / "Dataset027_ACDC"
    for patient in patients:
        for image in sorted((acdc_root / patient).glob(f"{patient}_frame??.nii.gz")):
            case = image.name[: -len(".nii.gz")]
            (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
            (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, folder / "imagesTr" / f"{case}_0000.nii.gz")
            shutil.copyfile(acdc_root / patient / f"{case}_gt.nii.gz", folder / "labelsTr" / f"{case}.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "cineMRI"},
        "labels": {"background": 0, "RV": 1, "MLV": 2, "LVC": 3},
        "numTraining": 2 * len(patients),
        "file_ending": ".nii.gz",
    }))
    return folder


@pytest.mark.acdc
def test_nnunet_raw_dataset_groups_frames_by_patient(tmp_path: Path, acdc_root: Path) -> None:
    folder = _raw_dataset(tmp_path, acdc_root, ["patient001", "patient090"])
    assert is_nnunet_raw_dataset(folder)
    assert list_cases(folder) == {
        "patient001": [("patient001_frame01", 1), ("patient001_frame12", 12)],
        "patient090": [("patient090_frame04", 4), ("patient090_frame11", 11)],
    }
    study = load_nnunet_study(folder, "patient001")
    assert study.frame_numbers == (1, 12)
    assert study.ed is None and study.es is None  # the raw layout does not state them
    assert all(f.reference is not None for f in study.frames)
    assert study.spacing == pytest.approx((1.5625, 1.5625, 10.0))


def test_plain_3d_nifti_is_one_frame_with_reference(tmp_path: Path) -> None:
    image = write_nifti(tmp_path / "case.nii.gz", np.random.default_rng(0).random((8, 9, 4)).astype(np.float32))
    labels = np.zeros((8, 9, 4), np.uint8)
    labels[2:5, 2:5, 1:3] = 3
    ref = write_nifti(tmp_path / "case_gt.nii.gz", labels)
    study = load_nifti_study(image, ref)
    assert study.study_id == "case"
    assert study.frame_numbers == (1,)
    np.testing.assert_array_equal(study.frames[0].reference, labels)
    assert study.spacing == pytest.approx((1.5, 1.5, 10.0))


def test_plain_4d_nifti_is_one_frame_per_phase(tmp_path: Path) -> None:
    ramp = np.arange(6 * 6 * 3, dtype=np.int16).reshape(6, 6, 3)  # every phase has signal (a constant one is refused)
    data = np.stack([ramp + 1000 * t for t in range(5)], axis=-1)
    study = load_nifti_study(write_nifti(tmp_path / "cine.nii.gz", data))
    assert study.frame_numbers == (1, 2, 3, 4, 5)
    assert [float(f.image[0, 0, 0]) for f in study.frames] == [0, 1000, 2000, 3000, 4000]


@pytest.mark.acdc
def test_raw_dataset_studies_are_discovered_and_opened(tmp_path: Path, acdc_root: Path) -> None:
    from heartseg.sources.local import discover_local
    from heartseg.studies import open_study

    folder = _raw_dataset(tmp_path, acdc_root, ["patient001", "patient090"])
    sources = discover_local(folder).sources
    assert sources == [f"{folder.resolve()}#patient001", f"{folder.resolve()}#patient090"]
    study = open_study(sources[1])
    assert study.study_id == "patient090" and study.frame_numbers == (4, 11)
