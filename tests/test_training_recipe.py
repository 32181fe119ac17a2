"""The parts of the model recipe that run without training: split, dataset conversion, plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heartseg.settings import Settings
from workers.training.dataset import convert_acdc, write_split
from workers.training.split import (
    ALL_PATIENTS,
    FOLD_VALIDATION,
    TRAINING_PATIENTS,
    VALIDATION_PATIENTS,
    fold_of,
    fold_patients,
)


def test_split_is_80_20_stratified_by_group() -> None:
    assert len(TRAINING_PATIENTS) == 80 and len(VALIDATION_PATIENTS) == 20
    assert not set(TRAINING_PATIENTS) & set(VALIDATION_PATIENTS)
    groups = [(int(p[-3:]) - 1) // 20 for p in VALIDATION_PATIENTS]  # 0 DCM, 1 HCM, 2 MINF, 3 NOR, 4 RV
    assert sorted(groups) == [g for g in range(5) for _ in range(4)]
    assert VALIDATION_PATIENTS[:4] == ("patient017", "patient018", "patient019", "patient020")


def test_five_folds_cover_every_patient_once_stratified_by_group() -> None:
    assert len(FOLD_VALIDATION) == 5
    assert FOLD_VALIDATION[0] == VALIDATION_PATIENTS  # the first shipped fold's split is kept
    seen = [p for fold in FOLD_VALIDATION for p in fold]
    assert sorted(seen) == list(ALL_PATIENTS)
    for fold, val in enumerate(FOLD_VALIDATION):
        groups = [(int(p[-3:]) - 1) // 20 for p in val]
        assert sorted(groups) == [g for g in range(5) for _ in range(4)], fold
        train, same = fold_patients(fold)
        assert same == val and len(train) == 80 and not set(train) & set(val)
        assert all(fold_of(p) == fold for p in val)
    # folds 1-4 are shuffled within each group, not runs of consecutive numbers
    assert FOLD_VALIDATION[1][:4] != ("patient001", "patient002", "patient003", "patient004")
    with pytest.raises(ValueError):
        fold_patients(5)


@pytest.mark.acdc
def test_conversion_matches_nnunet_dataset027_layout(acdc_root: Path, tmp_path: Path) -> None:
    out = convert_acdc(acdc_root, tmp_path, ("patient001", "patient090"))
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        "patient001_frame01_0000.nii.gz", "patient001_frame12_0000.nii.gz",
        "patient090_frame04_0000.nii.gz", "patient090_frame11_0000.nii.gz"]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [
        "patient001_frame01.nii.gz", "patient001_frame12.nii.gz",
        "patient090_frame04.nii.gz", "patient090_frame11.nii.gz"]
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "RV": 1, "MLV": 2, "LVC": 3}
    assert dataset["channel_names"] == {"0": "cineMRI"} and dataset["numTraining"] == 4
    cases = ["patient001_frame01", "patient001_frame12", "patient090_frame04", "patient090_frame11"]
    write_split(tmp_path / "pre", [(("patient001",), ("patient090",)), (("patient090",), ("patient001",))], cases)
    split = json.loads((tmp_path / "pre" / "splits_final.json").read_text())
    assert split == [{"train": ["patient001_frame01", "patient001_frame12"],
                      "val": ["patient090_frame04", "patient090_frame11"]},
                     {"train": ["patient090_frame04", "patient090_frame11"],
                      "val": ["patient001_frame01", "patient001_frame12"]}]


def test_shipped_model_uses_the_reduced_plans() -> None:
    from heartseg.settings import Settings

    plans = json.loads((Settings().model_dir / "plans.json").read_text())
    config = plans["configurations"]["2d"]
    assert plans["plans_name"] == "HeartSegPlans"
    assert config["architecture"]["arch_kwargs"]["features_per_stage"] == [16, 32, 64, 128, 128, 128]
    assert config["patch_size"] == [160, 160]


def test_half_weights_keep_shared_tensors_shared(tmp_path: Path) -> None:
    """``export --half``: the shipped fold's weights in half precision, in a file about half the size (nnU-Net's
    decoder shares its encoder's tensors; each is written once), loading into the network as before."""
    import torch

    from workers.training.recipe import half_weights

    source = Settings().model_dir / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    weights = checkpoint["network_weights"]
    half = half_weights(weights)
    assert half.keys() == weights.keys()
    assert all(h.dtype == torch.float16 for h in half.values() if h.is_floating_point())
    shared = [(a, b) for a in weights for b in weights
              if a < b and weights[a].untyped_storage().data_ptr() == weights[b].untyped_storage().data_ptr()]
    assert shared  # the decoder's copy of the encoder
    assert all(half[a].untyped_storage().data_ptr() == half[b].untyped_storage().data_ptr() for a, b in shared)
    torch.save({**checkpoint, "network_weights": half}, tmp_path / "half.pth")
    assert (tmp_path / "half.pth").stat().st_size < 0.55 * source.stat().st_size
    for name, tensor in weights.items():
        if tensor.is_floating_point():
            assert torch.allclose(half[name].float(), tensor, rtol=1e-3, atol=1e-4), name
