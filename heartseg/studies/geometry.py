"""Plausibility checks that every study reader applies: voxel spacing and image signal.

A header can carry a spacing no cardiac MR image has (0, 1e-4 mm, 100 mm, NaN), and a file can
hold an image without signal (one value everywhere). Neither fails loudly on its own: a spacing
of 1e-4 mm ends in a resampling crash or an allocation of terabytes, and an all-zero image is
"segmented" into plausible-looking volumes. The readers refuse both up front, naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from heartseg.errors import StudyError

if TYPE_CHECKING:
    from heartseg.settings import Settings


@dataclass(frozen=True)
class GeometryLimits:
    """The voxel spacing (mm) a study may have; the defaults are the settings' defaults.

    Built from the settings with :meth:`from_settings`
    (``HEARTSEG_MIN_INPLANE_SPACING_MM`` ... ``HEARTSEG_MAX_SLICE_SPACING_MM``).
    """

    min_inplane_mm: float = 0.1
    max_inplane_mm: float = 20.0
    min_slice_mm: float = 0.5
    max_slice_mm: float = 30.0

    def __post_init__(self) -> None:
        for name, low, high in (("in-plane", self.min_inplane_mm, self.max_inplane_mm),
                                ("slice", self.min_slice_mm, self.max_slice_mm)):
            if not (np.isfinite(low) and np.isfinite(high) and 0 < low < high):
                raise ValueError(f"{name} spacing limits must satisfy 0 < minimum < maximum, got {low}, {high}")

    @classmethod
    def from_settings(cls, settings: Settings) -> GeometryLimits:
        """The limits configured by ``HEARTSEG_MIN/MAX_INPLANE_SPACING_MM`` and ``..._SLICE_SPACING_MM``."""
        return cls(
            min_inplane_mm=settings.min_inplane_spacing_mm,
            max_inplane_mm=settings.max_inplane_spacing_mm,
            min_slice_mm=settings.min_slice_spacing_mm,
            max_slice_mm=settings.max_slice_spacing_mm,
        )


def check_spacing(
    path: str | Path, spacing: Sequence[float], limits: GeometryLimits | None, *, what: str = "voxel spacing"
) -> tuple[float, float, float]:
    """Return ``spacing`` as three floats ``(x, y, z)`` in mm, or refuse it.

    Every spacing must be finite and positive; with ``limits`` the in-plane spacings (x, y) and
    the slice spacing (z) must also lie within them.

    Parameters
    ----------
    path
        The file (or folder) the spacing was read from, named in the error.
    spacing
        ``(x, y, z)`` in mm.
    limits
        The plausible range, or None to check only that the values are finite and positive.
    what
        Where the spacing comes from, for the message (``"PixelSpacing"``, ``"slice spacing"``).

    Raises
    ------
    StudyError
        Naming ``path``, the spacing found and the range expected.
    """
    values = tuple(float(s) for s in spacing)
    if len(values) != 3:
        raise StudyError(path, f"{what} must be three numbers (x, y, z), found {values}")
    shown = "(" + ", ".join(f"{v:g}" for v in values) + ") mm"
    for axis, value in zip("xyz", values, strict=True):
        if not np.isfinite(value) or value <= 0:
            raise StudyError(path, f"{what} {shown}: {axis} spacing {value:g} is not a positive finite number")
    if limits is not None:
        ranges = (("in-plane", "INPLANE", limits.min_inplane_mm, limits.max_inplane_mm),) * 2 + (
            ("between-slice", "SLICE", limits.min_slice_mm, limits.max_slice_mm),)
        for axis, value, (kind, setting, low, high) in zip("xyz", values, ranges, strict=True):
            if not low <= value <= high:
                raise StudyError(
                    path,
                    f"{what} {shown}: {kind} spacing {axis} = {value:g} mm is outside the plausible range "
                    f"{low:g}-{high:g} mm (HEARTSEG_MIN_{setting}_SPACING_MM, HEARTSEG_MAX_{setting}_SPACING_MM)",
                )
    return values[0], values[1], values[2]


def check_signal(path: str | Path, image: npt.ArrayLike, *, frame: int | None = None) -> None:
    """Refuse an image with NaN or infinite voxels, or without signal (one value everywhere).

    Parameters
    ----------
    path
        The file (or folder) the image came from, named in the error.
    image
        The intensities.
    frame
        The 1-based frame (phase) number, named in the error, when the file holds several.

    Raises
    ------
    StudyError
        ``"N voxels have NaN or infinite intensity"`` or ``"no signal: every voxel is V"``.
    """
    array = np.asarray(image)
    where = f"frame {frame}: " if frame is not None else ""
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise StudyError(path, f"{where}{bad} voxels have NaN or infinite intensity")
    if array.size == 0:
        raise StudyError(path, f"{where}the image has no voxels (shape {array.shape})")
    low, high = array.min(), array.max()
    if low == high:
        raise StudyError(path, f"{where}no signal: every voxel of the image is {float(low):g}")
