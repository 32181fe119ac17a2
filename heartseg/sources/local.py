"""Studies in a local (or mounted) folder: ACDC patient folders, an nnU-Net raw dataset, DICOM series, NIfTI files."""

from __future__ import annotations

from pathlib import Path

from heartseg.errors import StudyError
from heartseg.sources.base import Selection, StudySource
from heartseg.studies import DATASET_STUDY_SEPARATOR
from heartseg.studies.acdc import is_acdc_patient
from heartseg.studies.dicom import is_dicom_folder
from heartseg.studies.nifti import is_nifti
from heartseg.studies.nnunet_raw import is_nnunet_raw_dataset, list_cases

SCHEME = "file"


def local_path(uri: str) -> str:
    """``file:///data/x`` -> ``/data/x``; a plain path is returned as given."""
    return uri.removeprefix(f"{SCHEME}://")


def discover_local(source: Path) -> list[str]:
    """Study sources under ``source``: itself if it is an ACDC patient folder; ``DATASET#study`` for each
    study of an nnU-Net raw dataset; else its ACDC patient sub-folders and NIfTI files (sorted).

    Raises :class:`StudyError` when nothing is found."""
    if not source.exists():
        raise StudyError(source, "source not found")
    if source.is_file():
        return [str(source.resolve())]
    if is_acdc_patient(source):
        return [str(source.resolve())]
    if is_nnunet_raw_dataset(source):
        return [f"{source.resolve()}{DATASET_STUDY_SEPARATOR}{study}" for study in list_cases(source)]
    if is_dicom_folder(source):
        return [str(source.resolve())]
    found = [p for p in sorted(source.iterdir()) if (p.is_dir() and (is_acdc_patient(p) or is_dicom_folder(p))) or
             (p.is_file() and is_nifti(p) and not p.name.endswith(("_gt.nii.gz", "_gt.nii")))]
    if not found:
        raise StudyError(source, "no studies found (ACDC patient folders with Info.cfg, or NIfTI files)")
    return [str(p.resolve()) for p in found]


class LocalSource(StudySource):
    """A folder on this host or a shared file system; studies are read where they are."""

    def discover(self, uri: str, selection: Selection) -> list[str]:
        """See :func:`discover_local`."""
        self.check_selection(uri, selection)
        return discover_local(Path(local_path(uri)))

    def fetch(self, source: str) -> str:
        """The study's own path: nothing is copied."""
        return local_path(source)
