"""Our metrics equal independent implementations (nnU-Net, MedPy) on real ACDC label maps."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from medpy.metric import binary as medpy_binary
from nnunetv2.evaluation.evaluate_predictions import compute_metrics
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from scipy import ndimage

from heartseg.labels import STRUCTURES
from heartseg.studies.acdc import load_acdc_patient
from workers.metrics import compare_label_maps, voxel_volume_ml

pytestmark = pytest.mark.acdc

#: 20 patients, four of each group.
PATIENTS = [f"patient{n:03d}" for g in (0, 20, 40, 60, 80) for n in (g + 1, g + 6, g + 11, g + 16)]
PERTURBATIONS = ("erode", "dilate", "shift")


def perturb(reference: np.ndarray, how: str) -> np.ndarray:
    """A plausible wrong prediction made from the reference, structure by structure."""
    prediction = np.zeros_like(reference)
    for label in (1, 2, 3):
        mask = reference == label
        if how == "erode":
            mask = ndimage.binary_erosion(mask, iterations=1)
        elif how == "dilate":
            mask = ndimage.binary_dilation(mask, iterations=2)
        else:
            mask = np.roll(mask, shift=(3, -2, 1), axis=(0, 1, 2))
        prediction[mask] = label
    return prediction


@pytest.mark.parametrize("index", range(len(PATIENTS)), ids=PATIENTS)
def test_metrics_equal_nnunet_and_medpy(index: int, acdc_root: Path, tmp_path: Path) -> None:
    patient = PATIENTS[index]
    how = PERTURBATIONS[index % len(PERTURBATIONS)]
    study = load_acdc_patient(acdc_root / patient, cine=False)
    frame = study.frame(study.ed if index % 2 == 0 else study.es)  # type: ignore[arg-type]
    assert frame.reference is not None
    reference = frame.reference
    prediction = perturb(reference, how)
    ours = compare_label_maps(prediction, reference, study.spacing)

    # nnU-Net reads the files with SimpleITK in its own axis order
    source = nib.load(acdc_root / patient / f"{patient}_frame{frame.number:02d}_gt.nii.gz")
    ref_file = tmp_path / "ref.nii.gz"
    pred_file = tmp_path / "pred.nii.gz"
    nib.save(nib.Nifti1Image(reference, source.affine, source.header), ref_file)
    nib.save(nib.Nifti1Image(prediction, source.affine, source.header), pred_file)
    nnunet = compute_metrics(str(ref_file), str(pred_file), SimpleITKIO(), [1, 2, 3])["metrics"]
    voxel_ml = voxel_volume_ml(study.spacing)

    for structure in STRUCTURES:
        m = ours[structure]
        n = nnunet[structure.label]
        pred_mask = prediction == structure.label
        ref_mask = reference == structure.label
        assert (m.tp, m.fp, m.fn) == (n["TP"], n["FP"], n["FN"])
        assert m.dice == pytest.approx(n["Dice"], abs=1e-9)
        assert m.iou == pytest.approx(n["IoU"], abs=1e-9)
        assert m.dice == pytest.approx(medpy_binary.dc(pred_mask, ref_mask), abs=1e-9)
        assert m.vol_pred_ml == pytest.approx(n["n_pred"] * voxel_ml, abs=1e-9)
        assert m.vol_ref_ml == pytest.approx(n["n_ref"] * voxel_ml, abs=1e-9)
        assert m.hd95_mm == pytest.approx(
            medpy_binary.hd95(pred_mask, ref_mask, voxelspacing=study.spacing), abs=1e-6
        )
        assert m.assd_mm == pytest.approx(
            medpy_binary.assd(pred_mask, ref_mask, voxelspacing=study.spacing), abs=1e-6
        )
        assert 0.0 < m.dice < 1.0 and m.hd95_mm > 0
