"""Reader for an nnU-Net v2 raw dataset folder.

::

    DatasetXXX_Name/dataset.json
    DatasetXXX_Name/imagesTr/CASE_0000.nii.gz   (and imagesTs/)
    DatasetXXX_Name/labelsTr/CASE.nii.gz        (optional reference)

Cases named ``<patient>_frameNN`` (the layout nnU-Net's own ACDC conversion writes) are
grouped into one study per patient with those frame numbers; every other case is a
study of one frame. ED and ES are not stated by this layout.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from heartseg.errors import StudyError
from heartseg.studies.acdc import frame_number_from_name
from heartseg.studies.geometry import GeometryLimits
from heartseg.studies.model import Frame, Study, StudyInfo
from heartseg.studies.nifti import AFFINE_TOLERANCE_MM, as_image, as_labels, check_same_grid, read_volume

DATASET_JSON = "dataset.json"
CHANNEL_SUFFIX = "_0000"


def is_nnunet_raw_dataset(folder: Path) -> bool:
    """Whether ``folder`` has a ``dataset.json`` and an ``imagesTr`` or ``imagesTs`` folder."""
    return (folder / DATASET_JSON).is_file() and ((folder / "imagesTr").is_dir() or (folder / "imagesTs").is_dir())


def read_dataset_json(folder: Path) -> dict[str, object]:
    """Read and check ``dataset.json``: one input channel and a known file ending."""
    path = folder / DATASET_JSON
    if not path.is_file():
        raise StudyError(path, "dataset.json not found")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StudyError(path, f"not valid JSON ({exc})") from exc
    channels = meta.get("channel_names") or meta.get("modality")
    if not isinstance(channels, dict) or len(channels) != 1:
        raise StudyError(path, f"expected exactly one input channel (cine MRI), found {channels!r}")
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in (".nii.gz", ".nii"):
        raise StudyError(path, f"file_ending {ending!r} is not supported; HeartSeg reads .nii.gz and .nii")
    return dict(meta)


def list_cases(folder: str | Path) -> dict[str, list[tuple[str, int]]]:
    """Map each study id to its ``(case, frame number)`` pairs, without reading images."""
    folder = Path(folder)
    meta = read_dataset_json(folder)
    ending = str(meta.get("file_ending", ".nii.gz"))
    studies: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for images in (folder / "imagesTr", folder / "imagesTs"):
        if not images.is_dir():
            continue
        for path in sorted(images.glob(f"*{CHANNEL_SUFFIX}{ending}")):
            case = path.name[: -len(CHANNEL_SUFFIX + ending)]
            parsed = frame_number_from_name(case + ending)
            study_id, number = parsed if parsed else (case, 1)
            studies[study_id].append((case, number))
    if not studies:
        raise StudyError(folder, f"no images named CASE{CHANNEL_SUFFIX}{ending} in imagesTr or imagesTs")
    return dict(studies)


def load_nnunet_study(folder: str | Path, study_id: str, *, limits: GeometryLimits | None = None) -> Study:
    """Load one study of an nnU-Net raw dataset (see the module docstring for grouping).

    ``limits`` is the plausible voxel spacing (default: :class:`GeometryLimits`'s defaults).
    """
    folder = Path(folder)
    limits = limits or GeometryLimits()
    meta = read_dataset_json(folder)
    ending = str(meta.get("file_ending", ".nii.gz"))
    cases = list_cases(folder).get(study_id)
    if not cases:
        raise StudyError(folder, f"no case belongs to study {study_id!r}")
    frames = []
    first = None
    for case, number in sorted(cases, key=lambda c: c[1]):
        image_path = _image_path(folder, case, ending)
        image = read_volume(image_path, limits=limits)
        if first is None:
            first = image
        elif image.data.shape != first.data.shape:
            raise StudyError(
                image_path, f"shape {image.data.shape} differs from {first.path.name}'s {first.data.shape}"
            )
        elif not np.allclose(image.spacing[:3], first.spacing[:3], atol=AFFINE_TOLERANCE_MM):
            raise StudyError(
                image_path, f"voxel spacing {image.spacing[:3]} differs from {first.path.name}'s {first.spacing[:3]}"
            )
        labels = None
        label_path = folder / "labelsTr" / f"{case}{ending}"
        if label_path.is_file():
            reference = read_volume(label_path)
            check_same_grid(image, reference)
            labels = as_labels(reference)
        frames.append(Frame(number, as_image(image), labels))
    assert first is not None  # cases is non-empty
    return Study(
        study_id=study_id,
        source=str(folder),
        frames=tuple(frames),
        spacing=(first.spacing[0], first.spacing[1], first.spacing[2]),
        affine=first.affine,
        info=StudyInfo(patient_id=study_id, n_frames=None),
        header=first.header,
    )


def _image_path(folder: Path, case: str, ending: str) -> Path:
    for images in ("imagesTr", "imagesTs"):
        path = folder / images / f"{case}{CHANNEL_SUFFIX}{ending}"
        if path.is_file():
            return path
    raise StudyError(folder, f"image of case {case!r} not found")
