"""Convert ACDC patient folders to an nnU-Net v2 raw dataset, as nnunetv2's Dataset027_ACDC does."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from heartseg.studies.acdc import read_info_cfg

DATASET_NAME = "Dataset027_ACDC"
LABELS = {"background": 0, "RV": 1, "MLV": 2, "LVC": 3}


def convert_acdc(acdc_training: Path, raw_root: Path, patients: tuple[str, ...]) -> Path:
    """Write the ED and ES frames of ``patients`` (ACDC-layout folders) as cases ``<patient>_frameXX``.

    Returns the dataset folder. Existing cases are kept (the conversion is idempotent), so
    several calls add up (ACDC patients, then phantoms).
    """
    out = raw_root / DATASET_NAME
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    for patient in patients:
        folder = acdc_training / patient
        info = read_info_cfg(folder / "Info.cfg")
        for number in (info.ed, info.es):
            case = f"{patient}_frame{number:02d}"
            _copy(folder / f"{case}.nii.gz", out / "imagesTr" / f"{case}_0000.nii.gz")
            _copy(folder / f"{case}_gt.nii.gz", out / "labelsTr" / f"{case}.nii.gz")
    n_cases = len(list((out / "imagesTr").glob("*_0000.nii.gz")))
    dataset = {
        "channel_names": {"0": "cineMRI"},
        "labels": LABELS,
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "name": "ACDC",
        "reference": "O. Bernard et al., IEEE TMI 37(11), 2514-2525, 2018",
    }
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return out


def _copy(source: Path, target: Path) -> None:
    if not target.exists():
        shutil.copyfile(source, target)


def write_split(preprocessed_dataset: Path, folds: Sequence[tuple[Sequence[str], Sequence[str]]],
                cases: list[str]) -> None:
    """Write nnU-Net's ``splits_final.json``: one ``{"train", "val"}`` entry per ``(train, val)`` patient pair.

    Cases (``<patient>_frameXX``) are assigned by patient, so both frames of a patient fall on one side.
    """

    def of(patients: Sequence[str]) -> list[str]:
        wanted = set(patients)
        return sorted(c for c in cases if c.split("_frame")[0] in wanted)

    preprocessed_dataset.mkdir(parents=True, exist_ok=True)
    splits = [{"train": of(train), "val": of(val)} for train, val in folds]
    (preprocessed_dataset / "splits_final.json").write_text(json.dumps(splits, indent=2))
