"""Reader for a short-axis cine MR series stored as single-frame DICOM files.

Order comes from the tags, never from file names: images are grouped by slice position
(ImagePositionPatient projected on the slice normal, the cross product of the two
ImageOrientationPatient direction cosines), the phases of each slice are ordered by
TriggerTime (InstanceNumber stands in when no image has TriggerTime), and every slice must have
the same number of phases. Pixel values get RescaleSlope/Intercept.

What is refused (naming the file or folder): images of one stack with differing orientation
(beyond :data:`ORIENTATION_TOLERANCE`), pixel spacing or size; slice positions that are not evenly
spaced (a missing slice, beyond :data:`~heartseg.studies.dicom.stacking.SLICE_GAP_TOLERANCE`); two
images at one slice position and phase (a duplicated slice); TriggerTime on some images only; an
implausible spacing (:class:`~heartseg.studies.geometry.GeometryLimits`); a phase without signal.
What is ignored (and logged): files beside the images that are not DICOM images (a README, a
DICOMDIR, a DICOM object without pixel data such as a structured report).

Geometry: voxel ``(i, j, k)`` = (column, row, slice), as HeartSeg's ``(x, y, z)``. The affine
maps it to RAS millimetres (DICOM's LPS with x and y negated, as NIfTI expects); in-plane
spacing is PixelSpacing, slice spacing the distance between neighbouring slice positions
(not SliceThickness, which can differ from it).

=================  =================================================================================
Module             What it holds
=================  =================================================================================
``reading``        files and series discovery, reading a file with pydicom, the files passed over
``tags``           one image's placing tags (:class:`DicomImage`), its pixels, the patient's values
``stacking``       images into one evenly spaced stack of slices and phases, its affine and spacing
``cine``           the loader (:func:`load_dicom_cine`: a folder to a :class:`~heartseg.studies.Study`)
                   and the 4D NIfTI writer
=================  =================================================================================
"""

from heartseg.studies.dicom.cine import load_dicom_cine, write_cine_nifti
from heartseg.studies.dicom.reading import is_dicom_file, is_dicom_folder, lenient_pydicom, read_dataset, read_series
from heartseg.studies.dicom.stacking import ORIENTATION_TOLERANCE, group_slices
from heartseg.studies.dicom.tags import DicomImage, read_image

__all__ = [
    "ORIENTATION_TOLERANCE",
    "DicomImage",
    "group_slices",
    "is_dicom_file",
    "is_dicom_folder",
    "lenient_pydicom",
    "load_dicom_cine",
    "read_dataset",
    "read_image",
    "read_series",
    "write_cine_nifti",
]
