"""Finding the DICOM files of a series folder and reading them with pydicom.

Order comes from the tags (:mod:`heartseg.studies.dicom.stacking`), never from file names, so a
folder's files are read in any order. What is passed over (and logged): files beside the images
that are not DICOM images (a README, a DICOMDIR, a DICOM object without pixel data such as a
structured report). A damaged DICOM image is not passed over: reading it raises
:class:`~heartseg.errors.StudyError` naming the file.
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from heartseg.errors import StudyError

if TYPE_CHECKING:
    from pydicom import FileDataset

logger = logging.getLogger(__name__)

#: MediaStorageSOPClassUID of a DICOMDIR (Media Storage Directory Storage).
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_PIXEL_DATA_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


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
