"""A folder of DICOM files as a :class:`~heartseg.studies.model.Study`, and a study as a 4D NIfTI.

:func:`load_dicom_cine` reads the folder's series (:mod:`~heartseg.studies.dicom.reading`), places
each image (:mod:`~heartseg.studies.dicom.tags`), orders them into one stack of slices and phases
(:mod:`~heartseg.studies.dicom.stacking`) and stacks each phase's pixels into one 3D frame, refusing
an implausible spacing (:class:`~heartseg.studies.geometry.GeometryLimits`) and a phase without signal.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from heartseg.errors import StudyError
from heartseg.studies.dicom.reading import read_series
from heartseg.studies.dicom.stacking import cine_affine, group_slices, slices_as_series
from heartseg.studies.dicom.tags import DicomImage, patient_info, pixels, read_image
from heartseg.studies.geometry import GeometryLimits, check_signal, check_spacing
from heartseg.studies.model import Frame, Study


def _joined_slices(series: dict[str, list[Path]]) -> list[DicomImage] | None:
    """:func:`slices_as_series` of a folder's series; None too when one of them is not an MR image series."""
    if len(series) < 2:
        return None
    try:
        images = {uid: [read_image(path) for path in paths] for uid, paths in series.items()}
    except StudyError:
        return None  # e.g. a localizer of another modality beside the cine: not one stack
    return slices_as_series(images)


def load_dicom_cine(
    folder: str | Path, series_uid: str | None = None, *, limits: GeometryLimits | None = None
) -> Study:
    """Load one cine series from a folder of DICOM files as a study with one frame per phase.

    Parameters
    ----------
    folder
        The files (any names, any order).
    series_uid
        Which series when the folder holds several; default: the series joined into one stack when they
        are one series per slice (:func:`slices_as_series`), else the one with most images.
    limits
        The plausible voxel spacing (default: :class:`GeometryLimits`'s defaults).

    Raises
    ------
    StudyError
        For non-MR images, missing geometry tags, images that are not one evenly spaced stack
        (see :func:`group_slices`), unequal phase counts, an implausible spacing, undecodable or
        truncated files, a phase without signal, naming the file or folder.
    """
    folder = Path(folder)
    series = read_series(folder)
    joined = _joined_slices(series) if series_uid is None else None
    uid = series_uid or max(series, key=lambda u: len(series[u]))
    if uid not in series:
        raise StudyError(folder, f"no series {uid}; found {', '.join(series)}")
    try:
        slices = group_slices(joined or [read_image(p) for p in series[uid]])
    except StudyError as exc:
        if series_uid or len(series) == 1 or joined:
            raise
        counts = ", ".join(f"{u}: {len(paths)} images" for u, paths in series.items())
        raise StudyError(exc.path, f"{exc.problem}; the folder holds {len(series)} series ({counts}) and the "
                                   "largest was read: keep one cine series per folder") from exc
    affine, spacing = cine_affine(slices)
    spacing = check_spacing(folder, spacing, limits or GeometryLimits(),
                            what="voxel spacing (PixelSpacing; between slices: their positions)")
    n_phases = len(slices[0])
    frames = []
    for phase in range(n_phases):
        volume = np.stack([pixels(group[phase]).T for group in slices], axis=-1)  # (column, row, slice)
        check_signal(folder, volume, frame=phase + 1)
        frames.append(Frame(phase + 1, volume.astype(np.float32)))
    header = nib.Nifti1Image(frames[0].image, affine).header
    header.set_zooms(spacing)
    return Study(
        study_id=folder.name,
        source=str(folder),
        frames=tuple(frames),
        spacing=spacing,
        affine=affine,
        info=patient_info(folder.name, [image for group in slices for image in group], n_phases),
        header=header,
        dicom_files={phase + 1: tuple(str(group[phase].path) for group in slices) for phase in range(n_phases)},
    )


def write_cine_nifti(study: Study, path: str | Path) -> Path:
    """Write a study's frames as one 4D NIfTI ``(x, y, z, phase)`` with its affine (``heartseg convert``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.stack([f.image for f in study.frames], axis=-1)
    image = nib.Nifti1Image(data, study.affine)
    image.header.set_zooms((*study.spacing, 1.0))
    image.set_qform(study.affine, code=1)
    image.set_sform(study.affine, code=1)
    nib.save(image, path)
    return path
