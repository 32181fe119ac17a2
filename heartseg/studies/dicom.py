"""Reader for a short-axis cine MR series stored as single-frame DICOM files.

Order comes from the tags, never from file names: images are grouped by slice position
(ImagePositionPatient projected on the slice normal, the cross product of the two
ImageOrientationPatient direction cosines), the phases of each slice are ordered by
TriggerTime (InstanceNumber breaks ties and stands in when TriggerTime is absent), and every
slice must have the same number of phases. Pixel values get RescaleSlope/Intercept.

Geometry: voxel ``(i, j, k)`` = (column, row, slice), as HeartSeg's ``(x, y, z)``. The affine
maps it to RAS millimetres (DICOM's LPS with x and y negated, as NIfTI expects); in-plane
spacing is PixelSpacing, slice spacing the distance between neighbouring slice positions
(not SliceThickness, which can differ from it).
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import numpy.typing as npt

from heartseg.errors import StudyError
from heartseg.studies.model import Frame, Study, StudyInfo

if TYPE_CHECKING:
    from pydicom import FileDataset

logger = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Slice positions closer than this (mm) along the normal are the same slice.
POSITION_TOLERANCE_MM = 0.01


@dataclass(frozen=True)
class DicomImage:
    """One MR image of a series with the tags that place it."""

    path: Path
    dataset: FileDataset
    position: npt.NDArray[np.float64]
    orientation: npt.NDArray[np.float64]
    spacing: tuple[float, float]
    trigger_time: float | None
    instance: int


def lenient_pydicom() -> None:
    """Read and write DICOM values as they are, without pydicom's validation.

    Real scanners write values the validator complains of (UIDs with leading zeros), and its
    warnings quote the values, a patient's name included, into the logs.
    """
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE


def read_dataset(path: str | Path) -> FileDataset:
    """One DICOM file, read leniently; :class:`StudyError` naming the file when it is not DICOM or is damaged."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    lenient_pydicom()
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise StudyError(path, f"not a DICOM file ({exc})") from exc
    except (OSError, EOFError, ValueError) as exc:
        raise StudyError(path, f"cannot read the DICOM file: corrupt or truncated ({exc})") from exc


def is_dicom_file(path: Path) -> bool:
    """Whether the file carries the DICOM preamble magic ``DICM`` at byte 128."""
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_folder(folder: Path) -> bool:
    """Whether ``folder``'s first regular file (by name) is a DICOM file."""
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    return bool(files) and is_dicom_file(files[0])


def read_series(folder: str | Path) -> dict[str, list[Path]]:
    """The DICOM files of ``folder`` grouped by SeriesInstanceUID (several series are split, not refused)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StudyError(folder, "folder not found")
    series: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        dataset = read_dataset(path)
        uid = str(getattr(dataset, "SeriesInstanceUID", "") or "")
        if not uid:
            raise StudyError(path, "no SeriesInstanceUID")
        series[uid].append(path)
    if not series:
        raise StudyError(folder, "no DICOM files")
    return dict(series)


def _image(path: Path) -> DicomImage:
    dataset = read_dataset(path)
    modality = getattr(dataset, "Modality", None)
    if modality != "MR":
        raise StudyError(path, f"modality is {modality!r}; HeartSeg segments cine MR (Modality MR)")
    missing = [t for t in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
               if getattr(dataset, t, None) is None]
    if missing:
        raise StudyError(path, f"missing {', '.join(missing)}: the image cannot be placed in space")
    trigger = getattr(dataset, "TriggerTime", None)
    return DicomImage(
        path=path,
        dataset=dataset,
        position=np.asarray([float(v) for v in dataset.ImagePositionPatient]),
        orientation=np.asarray([float(v) for v in dataset.ImageOrientationPatient]),
        spacing=(float(dataset.PixelSpacing[0]), float(dataset.PixelSpacing[1])),
        trigger_time=float(trigger) if trigger not in (None, "") else None,
        instance=int(getattr(dataset, "InstanceNumber", 0) or 0),
    )


def _pixels(image: DicomImage) -> npt.NDArray[np.floating]:
    dataset = image.dataset
    try:
        array = dataset.pixel_array.astype(np.float32)
    except Exception as exc:  # pydicom raises several types for missing decoders and bad pixel data
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise StudyError(image.path, f"cannot decode the pixel data (transfer syntax {syntax}): {exc}") from exc
    slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
    intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
    return array * slope + intercept


def group_slices(images: list[DicomImage]) -> list[list[DicomImage]]:
    """Images grouped by position along the slice normal (ascending), phases ordered in time."""
    orientation = images[0].orientation
    for image in images:
        if not np.allclose(image.orientation, orientation, atol=1e-4):
            raise StudyError(image.path, "ImageOrientationPatient differs within the series; not one stack")
    normal = np.cross(orientation[:3], orientation[3:])
    ordered = sorted(images, key=lambda im: float(np.dot(im.position, normal)))
    slices: list[list[DicomImage]] = []
    last = None
    for image in ordered:
        distance = float(np.dot(image.position, normal))
        if last is None or distance - last > POSITION_TOLERANCE_MM:
            slices.append([])
            last = distance
        slices[-1].append(image)
    for group in slices:
        group.sort(key=lambda im: (im.trigger_time if im.trigger_time is not None else float(im.instance),
                                   im.instance))
    counts = {len(group) for group in slices}
    if len(counts) != 1:
        detail = ", ".join(f"{len(g)} at {float(np.dot(g[0].position, normal)):.2f} mm" for g in slices)
        raise StudyError(images[0].path.parent, f"slices have unequal numbers of phases ({detail})")
    return slices


def cine_affine(slices: list[list[DicomImage]]) -> tuple[np.ndarray, tuple[float, float, float]]:
    """RAS affine of voxel (column, row, slice) and the spacing (column, row, slice) in mm."""
    first = slices[0][0]
    row_cosine, column_cosine = first.orientation[:3], first.orientation[3:]
    row_spacing, column_spacing = first.spacing  # PixelSpacing = (between rows, between columns)
    if len(slices) > 1:
        step = (slices[-1][0].position - first.position) / (len(slices) - 1)
    else:
        thickness = float(getattr(first.dataset, "SliceThickness", 1.0) or 1.0)
        step = np.cross(row_cosine, column_cosine) * thickness
    affine = np.eye(4)
    affine[:3, 0] = row_cosine * column_spacing
    affine[:3, 1] = column_cosine * row_spacing
    affine[:3, 2] = step
    affine[:3, 3] = first.position
    return LPS_TO_RAS @ affine, (column_spacing, row_spacing, float(np.linalg.norm(step)))


def load_dicom_cine(folder: str | Path, series_uid: str | None = None) -> Study:
    """Load one cine series from a folder of DICOM files as a study with one frame per phase.

    Parameters
    ----------
    folder
        The files (any names, any order).
    series_uid
        Which series when the folder holds several; default the one with most images.

    Raises
    ------
    StudyError
        For non-MR images, missing geometry tags, unequal phase counts, undecodable or
        truncated files, naming the file.
    """
    folder = Path(folder)
    series = read_series(folder)
    uid = series_uid or max(series, key=lambda u: len(series[u]))
    if uid not in series:
        raise StudyError(folder, f"no series {uid}; found {', '.join(series)}")
    slices = group_slices([_image(p) for p in series[uid]])
    affine, spacing = cine_affine(slices)
    n_phases = len(slices[0])
    frames = []
    for phase in range(n_phases):
        volume = np.stack([_pixels(group[phase]).T for group in slices], axis=-1)  # (column, row, slice)
        if not np.isfinite(volume).all():
            raise StudyError(slices[0][phase].path, "pixel values are not finite")
        frames.append(Frame(phase + 1, volume.astype(np.float32)))
    header = nib.Nifti1Image(frames[0].image, affine).header
    header.set_zooms(spacing)
    return Study(
        study_id=folder.name,
        source=str(folder),
        frames=tuple(frames),
        spacing=spacing,
        affine=affine,
        info=StudyInfo(patient_id=folder.name, n_frames=n_phases),
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
