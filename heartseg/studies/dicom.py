"""Reader for a short-axis cine MR series stored as single-frame DICOM files.

Order comes from the tags, never from file names: images are grouped by slice position
(ImagePositionPatient projected on the slice normal, the cross product of the two
ImageOrientationPatient direction cosines), the phases of each slice are ordered by
TriggerTime (InstanceNumber stands in when no image has TriggerTime), and every slice must have
the same number of phases. Pixel values get RescaleSlope/Intercept.

What is refused (naming the file or folder): images of one stack with differing orientation
(beyond :data:`ORIENTATION_TOLERANCE`), pixel spacing or size; slice positions that are not evenly
spaced (a missing slice, beyond :data:`SLICE_GAP_TOLERANCE`); two images at one slice position and
phase (a duplicated slice); TriggerTime on some images only; an implausible spacing
(:class:`~heartseg.studies.geometry.GeometryLimits`); a phase without signal. What is ignored (and
logged): files beside the images that are not DICOM images (a README, a DICOMDIR, a DICOM object
without pixel data such as a structured report).

Geometry: voxel ``(i, j, k)`` = (column, row, slice), as HeartSeg's ``(x, y, z)``. The affine
maps it to RAS millimetres (DICOM's LPS with x and y negated, as NIfTI expects); in-plane
spacing is PixelSpacing, slice spacing the distance between neighbouring slice positions
(not SliceThickness, which can differ from it).
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import numpy.typing as npt

from heartseg.errors import StudyError
from heartseg.studies.geometry import GeometryLimits, check_signal, check_spacing
from heartseg.studies.model import Frame, Study, StudyInfo

if TYPE_CHECKING:
    from pydicom import FileDataset

logger = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Slice positions closer than this (mm) along the normal are the same slice.
POSITION_TOLERANCE_MM = 0.01
#: ImageOrientationPatient direction cosines that differ by no more than this are the same orientation.
ORIENTATION_TOLERANCE = 1e-4
#: Neighbouring slice positions may be this fraction of the median gap closer or farther apart than it
#: (a missing slice doubles one gap, a repeated one at another position shortens one).
SLICE_GAP_TOLERANCE = 0.1
#: Images whose PixelSpacing differ by more than this (mm) do not share one voxel grid.
PIXEL_SPACING_TOLERANCE_MM = 1e-3
#: MediaStorageSOPClassUID of a DICOMDIR (Media Storage Directory Storage).
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: The plausible ranges of the patient values read into :class:`StudyInfo`; others are ignored (and logged).
PLAUSIBLE_HEIGHT_CM = (30.0, 250.0)
PLAUSIBLE_WEIGHT_KG = (1.0, 400.0)
PLAUSIBLE_HEART_RATE_BPM = (20.0, 300.0)
_PIXEL_DATA_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
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
    """Whether ``folder`` holds a DICOM file (other than a DICOMDIR) among its regular files.

    Files are looked at in name order until one is DICOM, so a README, an empty file or a
    DICOMDIR sorting first does not hide the series; NIfTI files are passed over unread.
    """
    if not folder.is_dir():
        return False
    for path in sorted(folder.iterdir()):
        if path.name.upper() == "DICOMDIR" or path.name.endswith((".nii", ".nii.gz")) or not path.is_file():
            continue
        if is_dicom_file(path):
            return True
    return False


def not_an_image(path: Path, dataset: FileDataset | None = None) -> str | None:
    """Why ``path`` is not a DICOM image that belongs to a series (so is passed over), or None when it is one.

    Not DICOM (no ``DICM`` preamble: text files, empty files), a DICOMDIR, or a DICOM object without
    pixel data or image size (a structured report, a presentation state). A damaged DICOM image is
    not passed over: reading it raises :class:`StudyError`.
    """
    if not is_dicom_file(path):
        return "not a DICOM file"
    dataset = read_dataset(path) if dataset is None else dataset
    file_meta = getattr(dataset, "file_meta", None)
    if str(getattr(file_meta, "MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS:
        return "a DICOMDIR"
    if not any(tag in dataset for tag in _PIXEL_DATA_TAGS) and "Rows" not in dataset:
        return "DICOM without pixel data"
    return None


def read_series(folder: str | Path) -> dict[str, list[Path]]:
    """The DICOM images of ``folder`` grouped by SeriesInstanceUID (several series are split, not refused).

    Other files (see :func:`not_an_image`) are passed over and logged.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise StudyError(folder, "folder not found")
    series: dict[str, list[Path]] = defaultdict(list)
    ignored: list[str] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        dataset = read_dataset(path) if is_dicom_file(path) else None
        reason = not_an_image(path, dataset)
        if reason is not None or dataset is None:
            ignored.append(f"{path.name} ({reason})")
            continue
        uid = str(getattr(dataset, "SeriesInstanceUID", "") or "")
        if not uid:
            raise StudyError(path, "no SeriesInstanceUID")
        series[uid].append(path)
    if ignored:
        logger.info("%s: ignored %d file(s) that are not DICOM images: %s", folder, len(ignored), ", ".join(ignored))
    if not series:
        detail = f" (ignored: {', '.join(ignored[:5])}{', ...' if len(ignored) > 5 else ''})" if ignored else ""
        raise StudyError(folder, f"no DICOM image files{detail}")
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


def _pixels(image: DicomImage) -> npt.NDArray[np.floating]:
    dataset = image.dataset
    try:
        array = dataset.pixel_array.astype(np.float32)
    except Exception as exc:  # pydicom raises several types for missing decoders and bad pixel data
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise StudyError(image.path, f"cannot decode the pixel data (transfer syntax {syntax}): {exc}") from exc
    slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
    intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
    pixels: npt.NDArray[np.floating] = array * slope + intercept
    finite = np.isfinite(pixels)
    if not finite.all():
        bad = int(pixels.size - np.count_nonzero(finite))
        raise StudyError(image.path, f"{bad} pixels have NaN or infinite values (after RescaleSlope/Intercept)")
    return pixels


def group_slices(images: list[DicomImage]) -> list[list[DicomImage]]:
    """Images grouped by position along the slice normal (ascending), phases ordered in time.

    Raises
    ------
    StudyError
        When the images are not one stack (orientation, pixel spacing or size differ), TriggerTime
        is on some images only, two images share a slice position and phase (a duplicated slice),
        slices have unequal numbers of phases, or the slice positions are not evenly spaced.
    """
    folder = images[0].path.parent
    check_one_stack(images)
    orientation = images[0].orientation
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
    phase_key, tag = _phase_order(images)
    for group in slices:
        group.sort(key=lambda im: (phase_key(im), im.instance, im.path.name))
        for earlier, later in pairwise(group):
            if phase_key(earlier) == phase_key(later):
                raise StudyError(
                    later.path,
                    f"duplicated slice: {later.path.name} and {earlier.path.name} are both at slice position "
                    f"{float(np.dot(later.position, normal)):.2f} mm with {tag} {phase_key(later):g}",
                )
    counts = {len(group) for group in slices}
    if len(counts) != 1:
        detail = ", ".join(f"{len(g)} at {float(np.dot(g[0].position, normal)):.2f} mm" for g in slices)
        raise StudyError(folder, f"slices have unequal numbers of phases ({detail})")
    check_even_spacing(folder, slices)
    return slices


def check_one_stack(images: list[DicomImage]) -> None:
    """Refuse images that do not share one orientation (within :data:`ORIENTATION_TOLERANCE`), pixel
    spacing (within :data:`PIXEL_SPACING_TOLERANCE_MM`) and size (Rows, Columns), naming the odd one out."""
    orientations = np.stack([im.orientation for im in images])
    spread = orientations.max(axis=0) - orientations.min(axis=0)
    if float(spread.max()) > ORIENTATION_TOLERANCE:
        typical = np.median(orientations, axis=0)
        odd = int(np.argmax(np.abs(orientations - typical).max(axis=1)))
        other = int(np.argmax(np.abs(orientations - orientations[odd]).max(axis=1)))
        difference = float(np.abs(orientations[odd] - orientations[other]).max())
        raise StudyError(
            images[odd].path,
            f"ImageOrientationPatient differs from {images[other].path.name}'s by {difference:.3g}, more than "
            f"the tolerance {ORIENTATION_TOLERANCE:g}: the images are not one stack",
        )
    first = images[0]
    size = (int(getattr(first.dataset, "Rows", 0) or 0), int(getattr(first.dataset, "Columns", 0) or 0))
    for image in images:
        if np.abs(np.subtract(image.spacing, first.spacing)).max() > PIXEL_SPACING_TOLERANCE_MM:
            raise StudyError(image.path, f"PixelSpacing {list(image.spacing)} differs from {first.path.name}'s "
                                         f"{list(first.spacing)}: the images are not one stack")
        other_size = (int(getattr(image.dataset, "Rows", 0) or 0), int(getattr(image.dataset, "Columns", 0) or 0))
        if other_size != size:
            raise StudyError(image.path, f"image size (Rows, Columns) {other_size} differs from {first.path.name}'s "
                                         f"{size}: the images are not one stack")


def _phase_order(images: list[DicomImage]) -> tuple[Callable[[DicomImage], float], str]:
    """How phases are ordered within a slice: by TriggerTime when every image has one, by InstanceNumber
    when none has; refused when only some have one (the two scales cannot be mixed)."""
    timed = sum(im.trigger_time is not None for im in images)
    if timed == len(images):
        return (lambda im: float(im.trigger_time if im.trigger_time is not None else 0.0)), "TriggerTime"
    if timed:
        untimed = next(im for im in images if im.trigger_time is None)
        raise StudyError(
            untimed.path,
            f"no TriggerTime, while {timed} of the series' {len(images)} images have one: the phases cannot be "
            "ordered consistently (TriggerTime must be on every image of the cine or on none)",
        )
    unnumbered = next((im for im in images if im.instance == 0), None)
    if unnumbered is not None:
        raise StudyError(unnumbered.path, "neither TriggerTime nor InstanceNumber: its phase cannot be placed")
    return (lambda im: float(im.instance)), "InstanceNumber"


def check_even_spacing(folder: Path, slices: list[list[DicomImage]]) -> None:
    """Refuse slice positions that are not evenly spaced along one line (a missing, repeated or moved slice).

    Gaps along the slice normal may differ from their median by :data:`SLICE_GAP_TOLERANCE` of it, and
    each slice's ImagePositionPatient may lie that far from the straight line through the first and last.
    """
    if len(slices) < 3:
        return
    orientation = slices[0][0].orientation
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.asarray([float(np.dot(group[0].position, normal)) for group in slices])
    gaps = np.diff(positions)
    median = float(np.median(gaps))
    allowed = SLICE_GAP_TOLERANCE * median
    listed = ", ".join(f"{p:.2f}" for p in positions)
    odd = int(np.argmax(np.abs(gaps - median)))
    if abs(float(gaps[odd]) - median) > allowed:
        kind = "a missing slice" if gaps[odd] > median else "a repeated or misplaced slice"
        raise StudyError(
            folder,
            f"slice positions are not evenly spaced: a gap of {gaps[odd]:.2f} mm between the slices at "
            f"{positions[odd]:.2f} and {positions[odd + 1]:.2f} mm ({slices[odd][0].path.name}, "
            f"{slices[odd + 1][0].path.name}) where the median gap is {median:.2f} mm ({kind}?); "
            f"positions along the slice normal: {listed} mm",
        )
    first, last = slices[0][0].position, slices[-1][0].position
    for index, group in enumerate(slices):
        expected = first + (last - first) * index / (len(slices) - 1)
        off = float(np.linalg.norm(group[0].position - expected))
        if off > allowed:
            raise StudyError(
                group[0].path,
                f"slice {index + 1} of {len(slices)} lies {off:.2f} mm off the straight line from the first "
                f"slice to the last (more than {allowed:.2f} mm): the slices are not one evenly spaced stack",
            )


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


def slices_as_series(series: dict[str, list[DicomImage]]) -> list[DicomImage] | None:
    """The images of a short-axis stack stored as one series per slice, as one stack; None when the series
    are not that.

    Some scanners and exports write each slice position's cine as its own series. Such series are
    joined when there are several, they belong to one study, each lies at one slice position (each a
    different one), they share the orientation (within :data:`ORIENTATION_TOLERANCE`) and they have
    the same number of phases; the joined stack then passes every check of one series.
    """
    if len(series) < 2:
        return None
    groups = list(series.values())
    first = groups[0][0]
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    studies = {str(getattr(im.dataset, "StudyInstanceUID", "") or "") for group in groups for im in group}
    if len(studies) != 1 or "" in studies or len({len(group) for group in groups}) != 1:
        return None
    positions = []
    for group in groups:
        along = [float(np.dot(im.position, normal)) for im in group]
        if max(along) - min(along) > POSITION_TOLERANCE_MM:
            return None  # a series that holds several slices: not one series per slice
        if any(np.abs(im.orientation - first.orientation).max() > ORIENTATION_TOLERANCE for im in group):
            return None
        positions.append(along[0])
    ordered = sorted(positions)
    if any(b - a <= POSITION_TOLERANCE_MM for a, b in pairwise(ordered)):
        return None  # two series at one position: repeats, not a stack
    return [im for group in groups for im in group]


def _joined_slices(series: dict[str, list[Path]]) -> list[DicomImage] | None:
    """:func:`slices_as_series` of a folder's series; None too when one of them is not an MR image series."""
    if len(series) < 2:
        return None
    try:
        images = {uid: [_image(path) for path in paths] for uid, paths in series.items()}
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
        slices = group_slices(joined or [_image(p) for p in series[uid]])
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
        volume = np.stack([_pixels(group[phase]).T for group in slices], axis=-1)  # (column, row, slice)
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
