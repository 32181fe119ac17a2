"""Study formats: one in-memory :class:`Study` model and the readers that build it.

=====================  ==============================================================
Source                 Reader
=====================  ==============================================================
ACDC patient folder    :func:`~heartseg.studies.acdc.load_acdc_patient`
nnU-Net raw dataset    :func:`~heartseg.studies.nnunet_raw.load_nnunet_study`
3D or 4D NIfTI file    :func:`~heartseg.studies.nifti_files.load_nifti_study`
DICOM cine series      :func:`~heartseg.studies.dicom.load_dicom_cine`
=====================  ==============================================================

Every reader refuses an implausible voxel spacing (:class:`GeometryLimits`, from the settings
``HEARTSEG_MIN/MAX_INPLANE_SPACING_MM`` and ``HEARTSEG_MIN/MAX_SLICE_SPACING_MM``) and an image
without signal, with a :class:`StudyError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

from heartseg.errors import StudyError
from heartseg.studies.acdc import is_acdc_patient, load_acdc_patient
from heartseg.studies.dicom import is_dicom_folder, load_dicom_cine
from heartseg.studies.geometry import GeometryLimits
from heartseg.studies.model import Frame, Study, StudyInfo
from heartseg.studies.nifti import is_nifti
from heartseg.studies.nifti_files import load_nifti_study
from heartseg.studies.nnunet_raw import load_nnunet_study

__all__ = ["Frame", "GeometryLimits", "Study", "StudyError", "StudyInfo", "open_study"]


#: Separates an nnU-Net raw dataset folder from a study id in a source: ``/data/Dataset027_ACDC#patient001``.
DATASET_STUDY_SEPARATOR = "#"


def open_study(path: str | Path, *, cine: bool = True, limits: GeometryLimits | None = None) -> Study:
    """Load a study from an ACDC patient folder, a DICOM cine series folder, a NIfTI file, or
    ``DATASET_DIR#study`` (a study of an nnU-Net raw dataset).

    ``limits`` is the plausible voxel spacing (default: :class:`GeometryLimits`'s defaults, which are
    the settings' defaults; a worker passes ``GeometryLimits.from_settings(settings)``).

    Raises
    ------
    StudyError
        If ``path`` is none of these, or the study is unreadable.
    """
    text = str(path)
    if DATASET_STUDY_SEPARATOR in text:
        folder, study_id = text.rsplit(DATASET_STUDY_SEPARATOR, 1)
        return load_nnunet_study(folder, study_id, limits=limits)
    path = Path(path)
    if path.is_dir():
        if is_acdc_patient(path) or not any(path.iterdir()):
            return load_acdc_patient(path, cine=cine, limits=limits)
        if is_dicom_folder(path):
            return load_dicom_cine(path, limits=limits)
        raise StudyError(path, "folder is neither an ACDC patient folder (no Info.cfg) nor a DICOM series")
    if is_nifti(path):
        return load_nifti_study(path, limits=limits)
    if not path.exists():
        raise StudyError(path, "file or folder not found")
    raise StudyError(path, "not a study: expected an ACDC patient folder or a .nii/.nii.gz file")
