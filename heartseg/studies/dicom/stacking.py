"""The images of a cine series as one stack: slices ordered along their normal, phases in time.

Images are grouped by slice position (ImagePositionPatient projected on the slice normal, the
cross product of the two ImageOrientationPatient direction cosines), the phases of each slice are
ordered by TriggerTime (InstanceNumber stands in when no image has TriggerTime), and every slice
must have the same number of phases. Refused, naming the file or folder: differing orientation
(beyond :data:`ORIENTATION_TOLERANCE`), pixel spacing or size; slice positions not evenly spaced
(beyond :data:`SLICE_GAP_TOLERANCE`); two images at one slice position and phase; TriggerTime on
some images only.

Geometry: voxel ``(i, j, k)`` = (column, row, slice). :func:`cine_affine` maps it to RAS millimetres
(DICOM's LPS with x and y negated, as NIfTI expects); the slice spacing is the distance between
neighbouring slice positions (not SliceThickness, which can differ from it).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import numpy as np

from heartseg.errors import StudyError
from heartseg.studies.dicom.tags import DicomImage

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
