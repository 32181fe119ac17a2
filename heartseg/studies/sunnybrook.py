"""Expert contours of the Sunnybrook Cardiac Data as reference label maps.

``IM-0001-NNNN-icontour-manual.txt`` (endocardium) and ``-ocontour-`` (epicardium) hold
``x y`` points in pixel coordinates (x = column, y = row) of the image whose InstanceNumber
is NNNN. The inside of the i-contour is LV cavity (label 3); between the o- and the
i-contour is LV myocardium (label 2), where both were drawn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from skimage.draw import polygon2mask

from heartseg.errors import StudyError
from heartseg.studies.dicom import group_slices, read_image, read_series

_NAME = re.compile(r"IM-\d+-(?P<number>\d+)-(?P<kind>[io])contour-manual\.txt$")


@dataclass(frozen=True)
class ContourReference:
    """Reference labels of one contoured image, placed in the cine (slice index, 1-based phase)."""

    instance: int
    slice_index: int
    phase: int
    labels: np.ndarray
    """(column, row) uint8 labels: 3 inside the endocardium, 2 in the myocardium (when drawn), else 0."""
    has_myocardium: bool


def read_contour(path: Path) -> np.ndarray:
    """The ``(x, y)`` points of a contour file."""
    try:
        points = np.loadtxt(path, ndmin=2)
    except ValueError as exc:
        raise StudyError(path, f"not a contour point list ({exc})") from exc
    if points.shape[1] != 2 or len(points) < 3:
        raise StudyError(path, f"expected at least 3 points of x y, found shape {points.shape}")
    return points


def _fill(points: np.ndarray, rows: int, columns: int) -> npt.NDArray[np.bool_]:
    mask: npt.NDArray[np.bool_] = polygon2mask((rows, columns), np.c_[points[:, 1], points[:, 0]])
    return mask.T  # (row, col) -> (col, row)


def contour_references(series_dir: Path, contours_dir: Path) -> list[ContourReference]:
    """Every contoured image of the series as reference labels placed by slice and phase."""
    uid = next(iter(sorted(read_series(series_dir).items(), key=lambda kv: -len(kv[1]))))[0]
    slices = group_slices([read_image(p) for p in read_series(series_dir)[uid]])
    place = {im.instance: (k, t + 1, im) for k, group in enumerate(slices) for t, im in enumerate(group)}
    contours: dict[int, dict[str, np.ndarray]] = {}
    for path in sorted(contours_dir.rglob("*contour-manual.txt")):
        match = _NAME.search(path.name)
        if match:
            contours.setdefault(int(match["number"]), {})[match["kind"]] = read_contour(path)
    references = []
    for number, drawn in sorted(contours.items()):
        if number not in place:
            raise StudyError(contours_dir, f"contour of image {number}, which is not in the series")
        if "i" not in drawn:
            continue
        slice_index, phase, image = place[number]
        rows, columns = int(image.dataset.Rows), int(image.dataset.Columns)
        labels = np.zeros((columns, rows), np.uint8)
        if "o" in drawn:
            labels[_fill(drawn["o"], rows, columns)] = 2
        labels[_fill(drawn["i"], rows, columns)] = 3
        references.append(ContourReference(number, slice_index, phase, labels, "o" in drawn))
    return references
