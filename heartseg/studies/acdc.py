"""Reader for a patient folder in the ACDC challenge layout.

::

    patientNNN/Info.cfg                      ED, ES (1-based), Group, Height, Weight, NbFrame
    patientNNN/patientNNN_frameXX.nii.gz     the ED and the ES frame
    patientNNN/patientNNN_frameXX_gt.nii.gz  their reference labels (optional)
    patientNNN/patientNNN_4d.nii.gz          the whole cine (optional; then every phase is a frame)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from heartseg.errors import StudyError
from heartseg.studies.geometry import GeometryLimits
from heartseg.studies.model import Frame, Study, StudyInfo
from heartseg.studies.nifti import AFFINE_TOLERANCE_MM, Volume, as_image, as_labels, check_same_grid, read_volume

INFO_FILE = "Info.cfg"
REQUIRED_FIELDS = ("ED", "ES", "Group", "Height", "Weight", "NbFrame")
_FRAME_FILE = re.compile(r"^(?P<patient>.+)_frame(?P<number>\d+)\.nii(\.gz)?$")


@dataclass(frozen=True)
class AcdcInfo:
    """The parsed contents of an ACDC ``Info.cfg``."""

    ed: int
    es: int
    group: str
    height_cm: float
    weight_kg: float
    n_frames: int


def read_info_cfg(path: str | Path) -> AcdcInfo:
    """Parse and check an ACDC ``Info.cfg``.

    Raises
    ------
    StudyError
        If the file is missing, a field is missing or malformed, or ED/ES lie outside
        ``1..NbFrame``.
    """
    path = Path(path)
    if not path.is_file():
        raise StudyError(path, "Info.cfg not found")
    fields: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    missing = [name for name in REQUIRED_FIELDS if name not in fields]
    if missing:
        raise StudyError(path, f"missing field(s) {', '.join(missing)}; expected {', '.join(REQUIRED_FIELDS)}")
    try:
        info = AcdcInfo(
            ed=int(fields["ED"]),
            es=int(fields["ES"]),
            group=fields["Group"],
            height_cm=float(fields["Height"]),
            weight_kg=float(fields["Weight"]),
            n_frames=int(fields["NbFrame"]),
        )
    except ValueError as exc:
        raise StudyError(path, f"malformed value ({exc})") from exc
    if info.n_frames < 1:
        raise StudyError(path, f"NbFrame must be at least 1, found {info.n_frames}")
    for name, number in (("ED", info.ed), ("ES", info.es)):
        if not 1 <= number <= info.n_frames:
            raise StudyError(path, f"{name} = {number} is outside the frames 1..{info.n_frames}")
    if info.ed == info.es:
        raise StudyError(path, f"ED and ES are the same frame ({info.ed})")
    return info


def is_acdc_patient(folder: Path) -> bool:
    """Whether ``folder`` looks like an ACDC patient folder (it has an ``Info.cfg``)."""
    return (folder / INFO_FILE).is_file()


def load_acdc_patient(folder: str | Path, *, cine: bool = True, limits: GeometryLimits | None = None) -> Study:
    """Load an ACDC patient folder.

    Parameters
    ----------
    folder
        The ``patientNNN`` folder.
    cine
        When True and a ``_4d`` file exists, every phase becomes a frame (ED and ES keep
        their references). When False, only the ED and ES frames are loaded.
    limits
        The plausible voxel spacing (default: :class:`GeometryLimits`'s defaults).

    Raises
    ------
    StudyError
        For a missing or empty folder, a bad ``Info.cfg``, and any unreadable or
        inconsistent image or reference, an implausible spacing or an image without signal.
    """
    folder = Path(folder)
    limits = limits or GeometryLimits()
    if not folder.is_dir():
        raise StudyError(folder, "study folder not found")
    if not any(folder.iterdir()):
        raise StudyError(folder, "study folder is empty")
    info = read_info_cfg(folder / INFO_FILE)
    patient = folder.name
    ed_es = {}
    for number in sorted({info.ed, info.es}):
        ed_es[number] = _load_frame(folder, patient, number, limits)
    first = ed_es[info.ed][0]

    cine_path = folder / f"{patient}_4d.nii.gz"
    frames: list[Frame]
    if cine and cine_path.is_file():
        frames = _cine_frames(cine_path, first, info, ed_es, limits)
    else:
        frames = [Frame(number=n, image=as_image(img), reference=ref) for n, (img, ref) in ed_es.items()]

    spacing = (first.spacing[0], first.spacing[1], first.spacing[2])
    return Study(
        study_id=patient,
        source=str(folder),
        frames=tuple(frames),
        spacing=spacing,
        affine=first.affine,
        info=StudyInfo(
            patient_id=patient,
            group=info.group,
            height_cm=info.height_cm,
            weight_kg=info.weight_kg,
            n_frames=info.n_frames,
        ),
        ed=info.ed,
        es=info.es,
        header=first.header,
    )


def _load_frame(
    folder: Path, patient: str, number: int, limits: GeometryLimits
) -> tuple[Volume, npt.NDArray[np.uint8] | None]:
    image = read_volume(folder / f"{patient}_frame{number:02d}.nii.gz", limits=limits)
    reference_path = folder / f"{patient}_frame{number:02d}_gt.nii.gz"
    if not reference_path.exists():
        return image, None
    reference = read_volume(reference_path)
    check_same_grid(image, reference)
    return image, as_labels(reference)


def _cine_frames(
    cine_path: Path,
    first: Volume,
    info: AcdcInfo,
    ed_es: dict[int, tuple[Volume, npt.NDArray[np.uint8] | None]],
    limits: GeometryLimits,
) -> list[Frame]:
    cine = read_volume(cine_path, ndims=(4,), limits=limits)
    if cine.data.shape[:3] != first.data.shape:
        raise StudyError(
            cine_path, f"cine shape {cine.data.shape[:3]} differs from the ED frame's {first.data.shape}"
        )
    if not np.allclose(cine.spacing[:3], first.spacing[:3], atol=AFFINE_TOLERANCE_MM):
        raise StudyError(
            cine_path, f"cine voxel spacing {cine.spacing[:3]} differs from the ED frame's {first.spacing[:3]}"
        )
    n_phases = cine.data.shape[3]
    if n_phases != info.n_frames:
        raise StudyError(cine_path, f"cine has {n_phases} phases but Info.cfg says NbFrame = {info.n_frames}")
    frames = []
    for index in range(n_phases):
        number = index + 1
        if number in ed_es:  # the ED/ES frame files are the images the references were drawn on
            image, reference = ed_es[number]
            frames.append(Frame(number=number, image=as_image(image), reference=reference))
        else:
            frames.append(Frame(number=number, image=as_image(cine, cine.data[..., index], frame=number)))
    return frames


def frame_number_from_name(name: str) -> tuple[str, int] | None:
    """``patient001_frame12.nii.gz`` -> ``("patient001", 12)``; None for other names."""
    match = _FRAME_FILE.match(name)
    if match is None:
        return None
    return match["patient"], int(match["number"])
