"""The mask file of one frame: a gzip'd NIfTI of its labels in the study's geometry.

The segment stage writes it (:func:`encode_mask`), the evaluate stage reads it back (:func:`decode_mask`).
"""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np

from heartseg.storage import gzip_deterministic
from heartseg.studies.model import Study as LoadedStudy


def encode_mask(labels: np.ndarray, study: LoadedStudy) -> bytes:
    """A gzip'd NIfTI of ``labels`` in the study's geometry, byte-identical for identical labels."""
    header = study.header.copy() if isinstance(study.header, nib.Nifti1Header) else None
    image = nib.Nifti1Image(np.asarray(labels, dtype=np.uint8), study.affine, header)
    image.set_data_dtype(np.uint8)
    image.header.set_slope_inter(1.0, 0.0)
    if header is not None and header["dim"][0] > 3:
        image.header.set_zooms(header.get_zooms()[:3])
    return gzip_deterministic(image.to_bytes())


def decode_mask(data: bytes) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Labels and image of a mask written by :func:`encode_mask`."""
    image = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    return np.asarray(image.dataobj).astype(np.uint8), image
