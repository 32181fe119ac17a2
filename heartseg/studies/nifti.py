"""Reading NIfTI volumes safely: every failure becomes a :class:`StudyError` naming the file."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
from nibabel.filebasedimages import ImageFileError
from nibabel.openers import ImageOpener

from heartseg.errors import StudyError
from heartseg.labels import VALID_LABELS
from heartseg.studies.geometry import GeometryLimits, check_signal, check_spacing

#: How far two affines may differ (in mm, element-wise) and still describe the same grid.
AFFINE_TOLERANCE_MM = 1e-3


@dataclass(frozen=True, eq=False)
class Volume:
    """A NIfTI file's voxel data with the geometry it came with."""

    path: Path
    data: np.ndarray
    affine: npt.NDArray[np.float64]
    spacing: tuple[float, ...]
    """Voxel size per axis in mm (and the time step for a 4D file), from the header."""
    header: nib.Nifti1Header


def read_volume(
    path: str | Path, *, ndims: tuple[int, ...] = (3,), limits: GeometryLimits | None = None
) -> Volume:
    """Read a NIfTI file fully into memory.

    Parameters
    ----------
    path
        A ``.nii`` or ``.nii.gz`` file.
    ndims
        The numbers of dimensions that are acceptable (3 for a frame, 4 for a cine).
    limits
        The plausible voxel spacing; None accepts any positive finite spacing (label maps).

    Raises
    ------
    StudyError
        If the file is missing, not a NIfTI, corrupt or truncated, has the wrong number
        of dimensions, or a voxel spacing that is 0, not finite or (with ``limits``)
        implausible.
    """
    path = Path(path)
    if not path.is_file():
        raise StudyError(path, "file not found")
    try:
        image = nib.load(path)
    except ImageFileError as exc:
        damage = _gzip_damage(path)
        if damage:
            raise StudyError(path, f"cannot read the file: corrupt or truncated ({damage})") from exc
        raise StudyError(path, f"not a NIfTI image ({exc})") from exc
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise StudyError(path, f"cannot read the file: corrupt or truncated ({exc})") from exc
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise StudyError(path, f"not a NIfTI image (nibabel read it as {type(image).__name__})")
    data = _read_data(path, image)
    # Drop trailing singleton dimensions (a 3D volume stored as x, y, z, 1).
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in ndims:
        expected = " or ".join(f"{n}D" for n in ndims)
        raise StudyError(path, f"expected a {expected} image, found {data.ndim}D with shape {data.shape}")
    _refuse_zero_pixdim(path, image)
    zooms = tuple(float(z) for z in image.header.get_zooms()[: data.ndim])
    check_spacing(path, zooms[:3], limits, what="voxel spacing in the header")
    return Volume(path=path, data=data, affine=np.asarray(image.affine, dtype=np.float64),
                  spacing=zooms, header=image.header)


def _refuse_zero_pixdim(path: Path, image: nib.Nifti1Image | nib.Nifti2Image) -> None:
    """Refuse a header whose stored spacing is 0: nibabel's header check silently reads it as 1 mm."""
    try:
        with ImageOpener(str(path)) as stream:
            stored = type(image.header).from_fileobj(stream, check=False)["pixdim"][1:4]
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise StudyError(path, f"cannot read the header: corrupt or truncated ({exc})") from exc
    if np.any(stored == 0):
        shown = ", ".join(f"{float(v):g}" for v in stored)
        raise StudyError(path, f"voxel spacing in the header (pixdim) is ({shown}): a spacing of 0 is not a size")


def _gzip_damage(path: Path) -> str | None:
    """Why a ``.gz`` file cannot be decompressed, or None when it can (or is not gzip)."""
    if not path.name.endswith(".gz"):
        return None
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        return str(exc)
    return None


def _read_data(path: Path, image: nib.Nifti1Image) -> np.ndarray:
    try:
        return np.asanyarray(image.dataobj)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise StudyError(path, f"cannot read the voxel data: corrupt or truncated ({exc})") from exc


def as_image(volume: Volume, data: np.ndarray | None = None, *, frame: int | None = None) -> npt.NDArray[np.float32]:
    """Intensities as float32, refusing NaN or infinite values and an image without signal.

    ``frame`` (1-based) names the phase of a 4D file in the error.
    """
    array = np.asarray(volume.data if data is None else data, dtype=np.float32)
    check_signal(volume.path, array, frame=frame)
    return array


def as_labels(volume: Volume, data: np.ndarray | None = None) -> npt.NDArray[np.uint8]:
    """A label map as uint8, refusing values outside the ACDC labels {0, 1, 2, 3}."""
    array = np.asarray(volume.data if data is None else data)
    if array.dtype.kind == "f" and (not np.isfinite(array).all() or not np.array_equal(array, np.round(array))):
        raise StudyError(volume.path, "label map has non-integer values; expected labels 0, 1, 2, 3")
    values = set(np.unique(array).astype(np.int64).tolist())
    unexpected = sorted(values - VALID_LABELS)
    if unexpected:
        raise StudyError(
            volume.path,
            f"label map has values {unexpected} outside the ACDC labels 0 (background), 1 (RV), 2 (MYO), 3 (LV)",
        )
    return array.astype(np.uint8)


def check_same_grid(image: Volume, reference: Volume) -> None:
    """Refuse a reference whose voxel grid differs from its image's."""
    if image.data.shape[:3] != reference.data.shape[:3]:
        raise StudyError(
            reference.path,
            f"reference shape {reference.data.shape[:3]} differs from image shape {image.data.shape[:3]} "
            f"({image.path.name})",
        )
    if not np.allclose(image.affine, reference.affine, atol=AFFINE_TOLERANCE_MM):
        worst = float(np.abs(image.affine - reference.affine).max())
        raise StudyError(
            reference.path,
            f"reference affine differs from the image's ({image.path.name}) by up to {worst:.4g} mm",
        )
    if not np.allclose(image.spacing[:3], reference.spacing[:3], atol=AFFINE_TOLERANCE_MM):
        raise StudyError(
            reference.path,
            f"reference spacing {reference.spacing[:3]} differs from image spacing {image.spacing[:3]}",
        )


def is_nifti(path: Path) -> bool:
    """Whether the file name says NIfTI."""
    return path.name.endswith((".nii.gz", ".nii"))


def strip_nifti_suffix(name: str) -> str:
    """``case.nii.gz`` -> ``case``."""
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def write_label_map(path: str | Path, labels: np.ndarray, affine: np.ndarray,
                    header: nib.Nifti1Header | None = None) -> Path:
    """Write a uint8 label map with the source's geometry (its affine and, when given, header).

    The header is copied so qform/sform codes and pixel dimensions round-trip exactly; its
    data type and scaling are reset for labels.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    source = header.copy() if isinstance(header, nib.Nifti1Header) else None
    image = nib.Nifti1Image(np.asarray(labels, dtype=np.uint8), affine, source)
    image.set_data_dtype(np.uint8)
    image.header.set_slope_inter(1.0, 0.0)
    if source is not None and labels.ndim < source["dim"][0]:
        image.header.set_zooms(source.get_zooms()[: labels.ndim])
    nib.save(image, path)
    return path
