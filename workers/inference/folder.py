"""Segment every NIfTI image of a folder into same-named label maps (``heartseg predict``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heartseg.errors import StudyError
from heartseg.studies.geometry import GeometryLimits
from heartseg.studies.nifti import as_image, is_nifti, read_volume, strip_nifti_suffix, write_label_map
from workers.inference.predictor import Segmenter

#: nnU-Net's channel suffix, dropped from output names so they match the reference names.
CHANNEL_SUFFIX = "_0000"


@dataclass(frozen=True)
class PredictResult:
    """One input file's outcome."""

    source: Path
    output: Path | None = None
    error: str | None = None
    skipped: bool = False
    """Not segmented again: its output file already existed (``skip_existing``); ``output`` names it."""


def output_name(source: Path) -> str:
    """``case_0000.nii.gz`` -> ``case.nii.gz``; other names are kept."""
    stem = strip_nifti_suffix(source.name)
    if stem.endswith(CHANNEL_SUFFIX):
        stem = stem[: -len(CHANNEL_SUFFIX)]
    return stem + ".nii.gz"


def predict_file(segmenter: Segmenter, source: Path, out_dir: Path,
                 limits: GeometryLimits | None = None) -> PredictResult:
    """Segment one 3D image or 4D cine (each phase) and write the label map beside the others.

    ``limits`` bound the voxel spacing (default: :class:`GeometryLimits`' defaults).

    Bad input (:class:`StudyError`: an unreadable file, a frame too large once resampled to the
    model's spacing) is this file's error, returned, not raised.
    """
    try:
        volume = read_volume(source, ndims=(3, 4), limits=limits or GeometryLimits())
        spacing = volume.spacing[:3]
        segmenter.check_size(volume.data.shape[:3], spacing, source)
        if volume.data.ndim == 3:
            labels = segmenter.segment(as_image(volume), spacing)
        else:
            phases = (as_image(volume, volume.data[..., t], frame=t + 1) for t in range(volume.data.shape[3]))
            labels = np.stack(segmenter.segment_frames(phases, spacing), axis=-1)
    except StudyError as exc:
        return PredictResult(source, error=str(exc))
    target = write_label_map(out_dir / output_name(source), labels, volume.affine, volume.header)
    return PredictResult(source, output=target)


def predict_folder(segmenter: Segmenter, in_dir: Path, out_dir: Path,
                   on_file: Callable[[Path], None] | None = None,
                   limits: GeometryLimits | None = None, *, skip_existing: bool = False) -> list[PredictResult]:
    """Segment every ``.nii``/``.nii.gz`` file in ``in_dir`` into ``out_dir``; a bad file is reported in its
    result and the others go on.

    With ``skip_existing`` (nnU-Net's ``--continue_prediction``), an input whose output file already exists is
    not segmented again: its result is marked ``skipped``.
    """
    if not in_dir.is_dir():
        raise StudyError(in_dir, "folder not found")
    results = []
    for source in sorted(p for p in in_dir.iterdir() if p.is_file() and is_nifti(p)):
        existing = out_dir / output_name(source)
        if skip_existing and existing.is_file():
            results.append(PredictResult(source, output=existing, skipped=True))
        else:
            results.append(predict_file(segmenter, source, out_dir, limits))
        if on_file is not None:
            on_file(source)
    return results
