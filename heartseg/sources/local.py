"""Studies in a local (or mounted) folder: ACDC patient folders, an nnU-Net raw dataset, DICOM series, NIfTI files."""

from __future__ import annotations

from pathlib import Path

from heartseg.errors import StudyError
from heartseg.sources.base import Discovery, Selection, StudySource
from heartseg.studies import DATASET_STUDY_SEPARATOR
from heartseg.studies.acdc import is_acdc_patient
from heartseg.studies.dicom import is_dicom_folder
from heartseg.studies.nifti import is_nifti
from heartseg.studies.nnunet_raw import is_nnunet_raw_dataset, list_cases

SCHEME = "file"


def local_path(uri: str) -> str:
    """``file:///data/x`` -> ``/data/x``; a plain path is returned as given."""
    return uri.removeprefix(f"{SCHEME}://")


def discover_local(source: Path) -> Discovery:
    """Study sources under ``source``: itself if it is an ACDC patient folder, a DICOM series or a file;
    ``DATASET#study`` for each study of an nnU-Net raw dataset; else its ACDC patient and DICOM series
    sub-folders and NIfTI files (sorted), with every other entry listed as skipped and why.

    Hidden entries (``.name``) and reference label maps (``*_gt.nii.gz``) are passed over silently.

    Raises :class:`StudyError` when nothing is found."""
    if not source.exists():
        raise StudyError(source, "source not found")
    if source.is_file() or is_acdc_patient(source) or is_dicom_folder(source):
        return Discovery([str(source.resolve())])
    if is_nnunet_raw_dataset(source):
        return Discovery([f"{source.resolve()}{DATASET_STUDY_SEPARATOR}{study}" for study in list_cases(source)])
    found, skipped = [], []
    for entry in sorted(source.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith(("_gt.nii.gz", "_gt.nii")):
            continue
        reason = _not_a_study(entry)
        if reason is None:
            found.append(str(entry.resolve()))
        else:
            skipped.append((str(entry), reason))
    if not found:
        listed = "; ".join(f"{Path(entry).name}: {reason}" for entry, reason in skipped[:5])
        raise StudyError(source, "no studies found (ACDC patient folders with Info.cfg, DICOM series or NIfTI "
                                 f"files){'; skipped ' + listed if listed else ''}")
    return Discovery(found, skipped)


def _not_a_study(entry: Path) -> str | None:
    """Why a folder entry is not a study, or None when it is one."""
    try:
        entry.stat()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if entry.is_dir():
        if is_acdc_patient(entry) or is_dicom_folder(entry):
            return None
        if not any(entry.iterdir()):
            return "empty folder"
        return "neither an ACDC patient folder (no Info.cfg) nor a DICOM series"
    if is_nifti(entry):
        return None  # an unreadable image fails its study with the reader's message
    return "not a NIfTI file, ACDC patient folder or DICOM series"


class LocalSource(StudySource):
    """A folder on this host or a shared file system; studies are read where they are."""

    def discover(self, uri: str, selection: Selection) -> Discovery:
        """See :func:`discover_local`."""
        self.check_selection(uri, selection)
        return discover_local(Path(local_path(uri)))

    def fetch(self, source: str) -> str:
        """The study's own path: nothing is copied."""
        return local_path(source)
