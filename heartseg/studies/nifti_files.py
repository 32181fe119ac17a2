"""Reader for a plain 3D or 4D NIfTI image, with an optional reference label map."""

from __future__ import annotations

from pathlib import Path

from heartseg.errors import StudyError
from heartseg.studies.geometry import GeometryLimits
from heartseg.studies.model import Frame, Study, StudyInfo
from heartseg.studies.nifti import as_image, as_labels, check_same_grid, read_volume, strip_nifti_suffix


def load_nifti_study(
    image_path: str | Path,
    reference_path: str | Path | None = None,
    *,
    study_id: str | None = None,
    limits: GeometryLimits | None = None,
) -> Study:
    """Load a 3D image (one frame) or a 4D cine (one frame per phase, the 4th axis).

    Parameters
    ----------
    image_path
        The image file.
    reference_path
        A label map with the image's grid: 3D for a 3D image; 3D or 4D for a cine
        (a 3D reference then belongs to frame 1).
    study_id
        Defaults to the file name without its NIfTI suffix.
    limits
        The plausible voxel spacing (default: :class:`GeometryLimits`'s defaults).

    Raises
    ------
    StudyError
        For any unreadable or inconsistent file, an implausible spacing or an image without signal.
    """
    image = read_volume(image_path, ndims=(3, 4), limits=limits or GeometryLimits())
    reference = None
    if reference_path is not None:
        reference = read_volume(reference_path, ndims=(3, 4) if image.data.ndim == 4 else (3,))
        check_same_grid(image, reference)
        if reference.data.ndim == 4 and reference.data.shape != image.data.shape:
            raise StudyError(
                reference.path, f"reference has {reference.data.shape[3]} phases, the image {image.data.shape[3]}"
            )
    frames = []
    if image.data.ndim == 3:
        frames.append(Frame(1, as_image(image), as_labels(reference) if reference is not None else None))
    else:
        for index in range(image.data.shape[3]):
            labels = None
            if reference is not None and reference.data.ndim == 4:
                labels = as_labels(reference, reference.data[..., index])
            elif reference is not None and index == 0:
                labels = as_labels(reference)
            frames.append(Frame(index + 1, as_image(image, image.data[..., index], frame=index + 1), labels))
    name = study_id or strip_nifti_suffix(Path(image_path).name)
    return Study(
        study_id=name,
        source=str(image_path),
        frames=tuple(frames),
        spacing=(image.spacing[0], image.spacing[1], image.spacing[2]),
        affine=image.affine,
        info=StudyInfo(patient_id=name, n_frames=len(frames)),
        header=image.header,
    )
