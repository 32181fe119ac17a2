"""Shared fixtures: the real ACDC cases and small NIfTI writers."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from heartseg.settings import Settings


def _acdc_root() -> Path:
    return Settings().acdc_training_dir


@pytest.fixture(scope="session")
def acdc_root() -> Path:
    """The real ACDC training folder; skipped locally when absent, an error in CI."""
    root = _acdc_root()
    if not root.is_dir():
        message = f"ACDC data not found at {root.resolve()} (set HEARTSEG_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


def write_nifti(path: Path, data: np.ndarray, spacing: tuple[float, ...] = (1.5, 1.5, 10.0),
                affine: np.ndarray | None = None) -> Path:
    """Write ``data`` as NIfTI with the given voxel spacing."""
    if affine is None:
        diagonal = [*spacing[:3], *([1.0] * (3 - len(spacing[:3])))]
        affine = np.diag([*diagonal, 1.0])
    image = nib.Nifti1Image(data, affine)
    image.header.set_zooms(tuple(spacing) + (1.0,) * (data.ndim - len(spacing)))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path
