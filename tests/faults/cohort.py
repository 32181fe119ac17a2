"""Tiny phantom cohorts for the fault scenarios, and a poison study.

The phantoms are small on purpose (112 x 112 voxels in-plane, 10 mm slices, 12 phases, no 4D cine): with
``--frames ed-es`` and no mirroring a study is a few seconds of CPU inference, so a scenario's time is
spent on the fault and the healing, not on segmenting.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np

from heartseg.phantom import PhantomParameters, draw_parameters, write_patient

IN_PLANE = 112
SLICE_MM = 10.0
PIXEL_MM = 1.5


def small_parameters(patient_id: str, seed: int) -> PhantomParameters:
    """A phantom's random anatomy on a small grid: 112 x 112 x (heart + 1) slices, 12 phases, ES at 5."""
    params = draw_parameters(patient_id, np.random.default_rng(seed))
    a = (3 * params.lv_edv_ml * 1000 / (2 * math.pi * params.lv_long_to_radius)) ** (1 / 3)
    n_slices = math.ceil((params.lv_long_to_radius * a + 14) / SLICE_MM) + 1
    centre = IN_PLANE * PIXEL_MM / 2
    return dataclasses.replace(params, shape=(IN_PLANE, IN_PLANE, n_slices), spacing=(PIXEL_MM, PIXEL_MM, SLICE_MM),
                               centre_mm=(centre, centre), base_z_mm=(n_slices - 1.5) * SLICE_MM, n_frames=12,
                               es_frame=5)


def write_small_cohort(folder: Path, n_patients: int, seed: int = 7) -> list[str]:
    """Write ``n_patients`` small phantoms (``phantom001``...) in ACDC layout, without the 4D cine; their names."""
    names = []
    for index in range(1, n_patients + 1):
        params = small_parameters(f"phantom{index:03d}", seed + index)
        write_patient(folder / params.patient_id, params)
        (folder / params.patient_id / f"{params.patient_id}_4d.nii.gz").unlink()
        names.append(params.patient_id)
    return names


def add_poison_study(cohort: Path, template_patient: Path, name: str = "poison001") -> Path:
    """Add a study that passes discovery but whose loading raises an unexpected error (not a StudyError) each time.

    It is a copy of ``template_patient`` whose ED frame holds RGB24 voxels: nibabel reads the file, the header is
    valid, and turning the voxels into intensities raises ``TypeError`` (a structured dtype cannot be cast to
    float), as a reader bug would.
    """
    folder = cohort / name
    folder.mkdir()
    old = template_patient.name
    for path in template_patient.iterdir():
        shutil.copy(path, folder / path.name.replace(old, name))
    frame = folder / f"{name}_frame01.nii.gz"
    image = cast(nib.Nifti1Image, nib.load(frame))
    grey = np.asarray(image.dataobj, dtype=np.float64)
    rgb = np.zeros(grey.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    scaled = (grey / max(float(grey.max()), 1.0) * 255).astype(np.uint8)
    for channel in ("R", "G", "B"):
        rgb[channel] = scaled
    poisoned = nib.Nifti1Image(rgb, image.affine)
    poisoned.header.set_zooms(image.header.get_zooms())
    nib.save(poisoned, frame)
    return folder
