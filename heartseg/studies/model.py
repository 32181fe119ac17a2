"""The in-memory study model that every part of HeartSeg uses after loading.

Axis order
----------
Volumes are numpy arrays in the voxel order of the NIfTI file they came from,
``(x, y, z)`` = (in-plane column, in-plane row, slice), exactly as nibabel returns them;
nothing is ever transposed or reoriented. ``spacing`` is ``(x, y, z)`` in millimetres,
read from the header's pixel dimensions (ACDC's sform carries no spacing, so the affine
is kept as given and never used to derive spacing). A cine is a sequence of such 3D
frames, one per cardiac phase.

Frame numbers are 1-based, as in ACDC file names, ``Info.cfg`` and DICOM, everywhere
in HeartSeg (record, reports, file names).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from heartseg.errors import StudyError
from heartseg.labels import Phase, frame_phase
from heartseg.studies.geometry import check_signal, check_spacing

if TYPE_CHECKING:
    from nibabel.nifti1 import Nifti1Header


@dataclass(frozen=True, eq=False)
class Frame:
    """One cardiac phase of a study: a 3D image and, where known, its reference labels."""

    number: int
    """1-based phase number within the cine."""
    image: npt.NDArray[np.float32]
    """Float32 intensities, shape ``(x, y, z)``."""
    reference: npt.NDArray[np.uint8] | None = None
    """Uint8 ACDC label map with the image's shape, or None."""


@dataclass(frozen=True)
class StudyInfo:
    """What is known about the patient and acquisition beyond the pixels."""

    patient_id: str
    group: str | None = None
    height_cm: float | None = None
    weight_kg: float | None = None
    n_frames: int | None = None
    """Number of phases in the full cine (Info.cfg ``NbFrame``), even if fewer are loaded."""
    heart_rate_bpm: float | None = None


@dataclass(frozen=True, eq=False)
class Study:
    """A loaded, validated study. Once constructed it is consistent (see ``__post_init__``).

    Attributes
    ----------
    study_id
        A stable identifier (ACDC: ``patient001``).
    source
        Where it was read from (a path or URI).
    frames
        The loaded frames, sorted by number.
    spacing
        Voxel size ``(x, y, z)`` in mm.
    affine
        The 4x4 voxel-to-world matrix of the source file, as stored.
    ed, es
        1-based numbers of the end-diastolic and end-systolic frames when the source
        states them (ACDC ``Info.cfg``); None when they must be found from volumes.
    header
        The source NIfTI header, kept so that masks are written in the same geometry.
    dicom_files
        For a DICOM source: per frame number, the image files of its slices in ``z`` order,
        so that segmentations can be written back as DICOM SEG referencing them.
    """

    study_id: str
    source: str
    frames: tuple[Frame, ...]
    spacing: tuple[float, float, float]
    affine: npt.NDArray[np.float64]
    info: StudyInfo
    ed: int | None = None
    es: int | None = None
    header: Nifti1Header | None = field(default=None, repr=False)
    dicom_files: Mapping[int, tuple[str, ...]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.frames:
            raise StudyError(self.source, "the study has no frames")
        numbers = [f.number for f in self.frames]
        if numbers != sorted(set(numbers)):
            raise StudyError(self.source, f"frame numbers must be unique and sorted, got {numbers}")
        shape = self.frames[0].image.shape
        for frame in self.frames:
            if frame.image.shape != shape:
                raise StudyError(
                    self.source,
                    f"frame {frame.number} has shape {frame.image.shape}, expected {shape} like frame {numbers[0]}",
                )
        for name, number in (("ED", self.ed), ("ES", self.es)):
            if number is not None and number not in numbers:
                raise StudyError(self.source, f"{name} frame {number} is not among the loaded frames {numbers}")
        check_spacing(self.source, self.spacing, None)
        for frame in self.frames:  # the readers check this naming the file; here for every study however built
            if frame.image.ndim != 3:
                raise StudyError(self.source, f"frame {frame.number} is {frame.image.ndim}D, expected 3D (x, y, z)")
            check_signal(self.source, frame.image, frame=frame.number)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The ``(x, y, z)`` shape shared by every frame."""
        x, y, z = self.frames[0].image.shape
        return (x, y, z)

    @property
    def frame_numbers(self) -> tuple[int, ...]:
        """The 1-based numbers of the loaded frames."""
        return tuple(f.number for f in self.frames)

    def frame(self, number: int) -> Frame:
        """The frame with this 1-based number.

        Raises
        ------
        KeyError
            If that frame was not loaded.
        """
        for frame in self.frames:
            if frame.number == number:
                return frame
        raise KeyError(f"{self.study_id} has no frame {number}; it has {self.frame_numbers}")

    def phase_of(self, number: int) -> Phase:
        """Whether frame ``number`` is the ED frame, the ES frame or another one."""
        return frame_phase(number, self.ed, self.es)

    def frames_with_reference(self) -> Sequence[Frame]:
        """The frames that carry a reference label map."""
        return [f for f in self.frames if f.reference is not None]
