"""Find studies in a local folder: ACDC patient folders, an nnU-Net raw dataset, NIfTI files."""

from __future__ import annotations

from pathlib import Path

from heartseg.errors import StudyError
from heartseg.studies import DATASET_STUDY_SEPARATOR
from heartseg.studies.acdc import is_acdc_patient
from heartseg.studies.dicom import is_dicom_folder
from heartseg.studies.nifti import is_nifti
from heartseg.studies.nnunet_raw import is_nnunet_raw_dataset, list_cases


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
