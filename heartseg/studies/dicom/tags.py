"""What one DICOM image's tags say: where it lies, its pixel values, and the patient's values.

:func:`read_image` reads the tags that place an image in space and in the cine (Modality,
ImagePositionPatient, ImageOrientationPatient, PixelSpacing, TriggerTime, InstanceNumber) into a
:class:`DicomImage`, refusing an image that cannot be placed; :func:`pixels` applies
RescaleSlope/Intercept; :func:`patient_info` reads height, weight and heart rate, ignoring (and
logging) implausible values.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from heartseg.errors import StudyError
from heartseg.studies.dicom.reading import read_dataset
from heartseg.studies.model import StudyInfo

if TYPE_CHECKING:
    from pydicom import FileDataset

logger = logging.getLogger(__name__)

#: The plausible ranges of the patient values read into :class:`StudyInfo`; others are ignored (and logged).
PLAUSIBLE_HEIGHT_CM = (30.0, 250.0)
PLAUSIBLE_WEIGHT_KG = (1.0, 400.0)
PLAUSIBLE_HEART_RATE_BPM = (20.0, 300.0)
#: How far ImageOrientationPatient's direction cosines may be from unit length and from right angles.
_UNIT_TOLERANCE = 1e-2


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
    """InstanceNumber; 0 when the image has none."""


def read_image(path: Path) -> DicomImage:
    """One MR image file with the tags that place it.

    Raises
    ------
    StudyError
        Naming the file, for another modality than MR, missing or malformed geometry tags, direction
        cosines that are not two unit vectors at right angles, or a malformed TriggerTime or InstanceNumber.
    """
    dataset = read_dataset(path)
    modality = getattr(dataset, "Modality", None)
    if modality != "MR":
        raise StudyError(path, f"modality is {modality!r}; HeartSeg segments cine MR (Modality MR)")
    missing = [t for t in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
               if getattr(dataset, t, None) is None]
    if missing:
        raise StudyError(path, f"missing {', '.join(missing)}: the image cannot be placed in space")
    position = _numbers(path, dataset, "ImagePositionPatient", 3)
    orientation = _numbers(path, dataset, "ImageOrientationPatient", 6)
    pixel_spacing = _numbers(path, dataset, "PixelSpacing", 2)
    row_norm, column_norm = np.linalg.norm(orientation[:3]), np.linalg.norm(orientation[3:])
    if (abs(row_norm - 1) > _UNIT_TOLERANCE or abs(column_norm - 1) > _UNIT_TOLERANCE
            or abs(float(np.dot(orientation[:3], orientation[3:]))) > _UNIT_TOLERANCE):
        raise StudyError(path, f"ImageOrientationPatient {orientation.tolist()} is not two unit vectors at right "
                               "angles: the image cannot be placed in space")
    trigger = getattr(dataset, "TriggerTime", None)
    try:
        trigger_time = float(trigger) if trigger not in (None, "") else None
        instance = int(getattr(dataset, "InstanceNumber", 0) or 0)
    except (TypeError, ValueError) as exc:
        raise StudyError(path, f"malformed TriggerTime or InstanceNumber ({exc})") from exc
    if trigger_time is not None and not np.isfinite(trigger_time):
        raise StudyError(path, f"TriggerTime {trigger_time} is not a finite number")
    return DicomImage(
        path=path,
        dataset=dataset,
        position=position,
        orientation=orientation,
        spacing=(float(pixel_spacing[0]), float(pixel_spacing[1])),
        trigger_time=trigger_time,
        instance=instance,
    )


def _numbers(path: Path, dataset: FileDataset, keyword: str, count: int) -> npt.NDArray[np.float64]:
    """A multi-valued numeric tag as ``count`` finite floats, or :class:`StudyError` naming the file."""
    raw = dataset.get(keyword)
    items = list(raw) if isinstance(raw, Sequence) and not isinstance(raw, str | bytes) else [raw]
    try:
        values = np.asarray([float(v) for v in items], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StudyError(path, f"malformed {keyword} ({exc})") from exc
    if values.shape != (count,) or not np.isfinite(values).all():
        raise StudyError(path, f"{keyword} must be {count} finite numbers, found {values.tolist()}")
    return values


def pixels(image: DicomImage) -> npt.NDArray[np.floating]:
    """The image's pixel values (rows, columns) with RescaleSlope/Intercept applied.

    Raises
    ------
    StudyError
        Naming the file, when the pixel data cannot be decoded or a value is NaN or infinite.
    """
    dataset = image.dataset
    try:
        array = dataset.pixel_array.astype(np.float32)
    except Exception as exc:  # pydicom raises several types for missing decoders and bad pixel data
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise StudyError(image.path, f"cannot decode the pixel data (transfer syntax {syntax}): {exc}") from exc
    slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
    intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
    values: npt.NDArray[np.floating] = array * slope + intercept
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(values.size - np.count_nonzero(finite))
        raise StudyError(image.path, f"{bad} pixels have NaN or infinite values (after RescaleSlope/Intercept)")
    return values


def patient_info(patient_id: str, images: Sequence[DicomImage], n_frames: int) -> StudyInfo:
    """Height (PatientSize, m -> cm), weight (PatientWeight, kg) and heart rate (HeartRate, bpm) from the
    images' headers, each the median over the images that carry a plausible value (a heart rate is
    recorded per breath-hold, so it differs from slice to slice); None when no image has one
    (:data:`PLAUSIBLE_HEIGHT_CM`, :data:`PLAUSIBLE_WEIGHT_KG`, :data:`PLAUSIBLE_HEART_RATE_BPM`)."""
    return StudyInfo(
        patient_id=patient_id,
        n_frames=n_frames,
        height_cm=_patient_value(images, "PatientSize", 100.0, PLAUSIBLE_HEIGHT_CM, "cm"),
        weight_kg=_patient_value(images, "PatientWeight", 1.0, PLAUSIBLE_WEIGHT_KG, "kg"),
        heart_rate_bpm=_patient_value(images, "HeartRate", 1.0, PLAUSIBLE_HEART_RATE_BPM, "bpm"),
    )


def _patient_value(images: Sequence[DicomImage], keyword: str, scale: float, plausible: tuple[float, float],
                   unit: str) -> float | None:
    low, high = plausible
    values: list[float] = []
    implausible: list[float] = []
    for image in images:
        raw = image.dataset.get(keyword)
        if raw in (None, ""):
            continue
        try:
            value = float(raw) * scale
        except (TypeError, ValueError):
            value = float("nan")
        (values if np.isfinite(value) and low <= value <= high else implausible).append(value)
    if implausible:  # the values themselves are not logged: they are the patient's
        logger.info("%s: %s of %d image(s) is not a plausible value (%g-%g %s); not used",
                    images[0].path.parent, keyword, len(implausible), low, high, unit)
    return float(np.median(values)) if values else None
