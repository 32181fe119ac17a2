"""The in-process predictor with the shipped model: equal to nnU-Net's own, and accurate."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from heartseg.models import ModelError
from heartseg.settings import Settings
from heartseg.studies.acdc import load_acdc_patient
from workers.inference.predictor import Segmenter

VALIDATION = ["patient017", "patient037", "patient057", "patient077", "patient097"]


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    # the network's own labels: nnUNetv2_predict applies no postprocessing either
    return Segmenter.from_settings(Settings(device="cpu", use_mirroring=False, postprocessing=False))


def test_untrusted_model_is_refused_before_loading(tmp_path: Path) -> None:
    shutil.copytree(Settings().model_dir, tmp_path / "model")
    with pytest.raises(ModelError, match="not inside a trusted model root"):
        Segmenter(tmp_path / "model", trusted_roots=Settings().trusted_roots, device="cpu")


@pytest.mark.acdc
def test_masks_equal_nnunet_predict(segmenter: Segmenter, acdc_root: Path, tmp_path: Path) -> None:
    """Same model, same files, mirroring off: our masks equal nnUNetv2_predict_from_modelfolder's (ED and ES of a
    validation patient)."""
    images = tmp_path / "images"
    images.mkdir()
    ours = {}
    for patient in VALIDATION[:1]:
        study = load_acdc_patient(acdc_root / patient, cine=False)
        for frame in study.frames:
            case = f"{patient}_frame{frame.number:02d}"
            shutil.copyfile(acdc_root / patient / f"{case}.nii.gz", images / f"{case}_0000.nii.gz")
            ours[case] = segmenter.segment(frame.image, study.spacing)
    out = tmp_path / "nnunet"
    subprocess.run(
        [str(Path(sys.executable).parent / "nnUNetv2_predict_from_modelfolder"), "-i", str(images), "-o", str(out),
         "-m", str(Settings().model_dir), "-f", "0", "--disable_tta", "-npp", "1", "-nps", "1", "-device", "cpu",
         "--disable_progress_bar"],
        check=True, capture_output=True, timeout=900,
    )
    assert len(ours) == 2
    for case, labels in ours.items():
        theirs = np.asarray(nib.load(out / f"{case}.nii.gz").dataobj)
        assert theirs.shape == labels.shape
        assert np.array_equal(theirs, labels), f"{case}: {int((theirs != labels).sum())} voxels differ"
        assert set(np.unique(labels)) == {0, 1, 2, 3}


def test_predict_cli_writes_same_named_maps_in_source_geometry(tmp_path: Path) -> None:
    """A 3D frame and a 4D cine in, same-named label maps with the source affine out."""
    from heartseg.phantom import draw_parameters, write_patient

    params = draw_parameters("phantom001", np.random.default_rng(21))
    write_patient(tmp_path / "cohort" / "phantom001", params)
    images = tmp_path / "in"
    images.mkdir()
    shutil.copyfile(tmp_path / "cohort" / "phantom001" / "phantom001_frame01.nii.gz", images / "ed_0000.nii.gz")
    cine = nib.load(tmp_path / "cohort" / "phantom001" / "phantom001_4d.nii.gz")
    short = nib.Nifti1Image(np.asarray(cine.dataobj)[..., :2], cine.affine, cine.header)
    nib.save(short, images / "cine.nii.gz")
    (images / "broken.nii.gz").write_bytes(b"not an image")
    result = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "predict", str(images), str(tmp_path / "out"), "--no-tta"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 1, result.stderr  # one of three failed
    assert "broken.nii.gz" in result.stderr
    ed = nib.load(tmp_path / "out" / "ed.nii.gz")
    source = nib.load(images / "ed_0000.nii.gz")
    assert ed.shape == source.shape and np.allclose(ed.affine, source.affine)
    assert ed.header.get_zooms() == pytest.approx(source.header.get_zooms())
    labels_4d = nib.load(tmp_path / "out" / "cine.nii.gz")
    assert labels_4d.shape == short.shape and np.allclose(labels_4d.affine, short.affine)
    assert set(np.unique(np.asarray(labels_4d.dataobj))) <= {0, 1, 2, 3}


def test_phantoms_are_segmented_with_accurate_ef(segmenter: Segmenter, tmp_path: Path) -> None:
    """Phantoms unseen in training (another seed): mean Dice >= 0.90 and LV EF within 5 points of the truth."""
    from tests.phantom_cache import write_cohort
    from workers.indices import cardiac_indices
    from workers.metrics import compare_label_maps

    truths = write_cohort(tmp_path, 2, seed=99)
    dice = []
    for truth in truths:
        study = load_acdc_patient(tmp_path / str(truth["patient"]), cine=False)
        predicted = {}
        for frame in study.frames:
            predicted[frame.number] = segmenter.segment(frame.image, study.spacing)
            assert frame.reference is not None
            dice += [m.dice for m in compare_label_maps(predicted[frame.number], frame.reference,
                                                        study.spacing).values()]
        ef = cardiac_indices(predicted, study.spacing, ed_frame=study.ed, es_frame=study.es).lv_ef_pct
        assert abs(ef - float(truth["lv_ef_pct"])) <= 5.0, (truth["patient"], ef, truth["lv_ef_pct"])
    assert float(np.mean(dice)) >= 0.90, dice


@pytest.mark.acdc
@pytest.mark.parametrize("mirroring", [False, True], ids=["tta-off", "tta-on"])
def test_batched_predictor_agrees_with_nnunet_predictor(acdc_root: Path, mirroring: bool) -> None:
    """Tiles of several frames (and their mirrored copies) per forward pass: the masks of nnU-Net's own predictor,
    up to argmax ties of a convolution run at another batch size (at most 0.01 % of voxels may differ)."""
    settings = Settings(device="cpu", use_mirroring=mirroring)
    nnunet = Segmenter.from_settings(settings.model_copy(update={"predictor": "nnunet"}))
    batched = Segmenter.from_settings(settings.model_copy(update={"predictor": "batched", "tiles_per_batch": 12}))
    patients = VALIDATION[:1] if mirroring else VALIDATION[2:]  # mirroring quadruples the forward passes
    differing = total = 0
    for patient in patients:
        study = load_acdc_patient(acdc_root / patient, cine=False)
        images = [frame.image for frame in study.frames]
        written: list[int] = []
        theirs = nnunet.segment_frames(images, study.spacing)
        ours = batched.segment_frames(images, study.spacing, on_labels=lambda i, *_, seen=written: seen.append(i))
        assert written == list(range(len(images)))  # the writer saw every frame, in order
        for a, b in zip(theirs, ours, strict=True):
            assert a.shape == b.shape and b.dtype == np.uint8
            differing += int((a != b).sum())
            total += a.size
    assert total > 0 and differing <= 1e-4 * total, f"{differing} of {total} voxels differ"


@pytest.mark.acdc
def test_torch_resampling_is_nnunets_and_changes_few_voxels(segmenter: Segmenter, acdc_root: Path) -> None:
    """``HEARTSEG_RESAMPLING=torch``: nnU-Net's torch resampling in and out, the labels of the plans' own
    resampling but for a few voxels at the edges (bench.resampling measures them on the validation patients)."""
    from nnunetv2.preprocessing.resampling.resample_torch import resample_torch_fornnunet

    settings = Settings(device="cpu", use_mirroring=False, postprocessing=False, resampling="torch")
    torch_resampled = Segmenter.from_settings(settings)
    manager = torch_resampled._predictor.configuration_manager
    for function in (manager.resampling_fn_data, manager.resampling_fn_probabilities):
        assert function.func is resample_torch_fornnunet  # type: ignore[attr-defined]
    assert segmenter._predictor.configuration_manager.resampling_fn_data.func is not resample_torch_fornnunet  # type: ignore[attr-defined]
    study = load_acdc_patient(acdc_root / "patient057", cine=False)  # 0.70 mm pixels, resampled to 1.5625 mm
    image = study.frame(study.ed).image[:, :, 3:6]  # type: ignore[index]  # three slices, every tile of them
    ours, theirs = torch_resampled.segment(image, study.spacing), segmenter.segment(image, study.spacing)
    assert ours.shape == theirs.shape == image.shape
    assert set(np.unique(ours)) == {0, 1, 2, 3}
    assert 0 < int((ours != theirs).sum()) < 0.01 * ours.size
