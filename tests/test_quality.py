"""The predicted Dice: quality signals from the folds' logits, the calibration, and its fit."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from heartseg.labels import Structure
from heartseg.models import CALIBRATION_FILE, model_files, model_fingerprint
from heartseg.settings import Settings
from heartseg.studies.acdc import load_acdc_patient
from workers.inference.quality_signals import frame_quality
from workers.quality import QualityCalibration, StructureCalibration, StructureQuality, load_calibration
from workers.training import calibrate

SHIPPED = Settings().model_dir


def logits_for(labels: np.ndarray, confidence: float = 10.0) -> torch.Tensor:
    """Logits ``(4, *shape)`` whose argmax is ``labels``, the chosen class ahead by ``confidence``."""
    one_hot = np.stack([labels == c for c in range(4)]).astype(np.float32)
    return torch.from_numpy(one_hot * confidence)


def heart(shape: tuple[int, int, int] = (1, 24, 24)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[:, 2:10, 2:10] = 1  # RV
    labels[:, 12:22, 12:22] = 2  # MYO ring
    labels[:, 14:20, 14:20] = 3  # LV
    return labels


def identity_on_self_dice() -> StructureCalibration:
    """A calibration that predicts a network's own soft Dice."""
    return StructureCalibration((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0), 0.0, (0.0, 1.0), (0.0, 1.0))


def test_signals_of_agreeing_and_disagreeing_folds() -> None:
    labels = heart()
    same = [logits_for(labels), logits_for(labels)]
    quality = frame_quality(same, torch.stack(same).mean(0), labels, (1.5, 1.5, 10.0))
    assert quality.n_folds == 2
    lv = quality.of(Structure.LV)
    assert lv is not None and lv.fold_agreement == 1.0
    assert lv.volume_ml == pytest.approx(36 * 1.5 * 1.5 * 10 / 1000)
    # confident logits: the soft self-Dice is near 1 and the entropy near 0
    assert all(d > 0.98 for d in lv.self_dice) and all(e is not None and e < 0.05 for e in lv.entropy)

    swapped = labels.copy()
    swapped[labels == 1], swapped[labels == 3] = 3, 1  # the second fold calls the LV the RV and vice versa
    folds = [logits_for(labels), logits_for(swapped, 5.0)]
    quality = frame_quality(folds, torch.stack(folds).mean(0), labels, (1.5, 1.5, 10.0))
    for structure in (Structure.RV, Structure.LV):
        signals = quality.of(structure)
        assert signals is not None and signals.fold_agreement == pytest.approx(0.5)  # one fold agrees, one not
    calibration = QualityCalibration({s: identity_on_self_dice() for s in Structure}, flag_below=0.8)
    predicted = calibration.apply(quality)
    rv = predicted.of(Structure.RV)
    myo = predicted.of(Structure.MYO)
    assert rv is not None and rv.predicted_dice == pytest.approx(0.5)  # capped by the folds' agreement
    assert myo is not None and myo.predicted_dice is not None and myo.predicted_dice > 0.95

    single = frame_quality([folds[0]], folds[0], labels, (1.0, 1.0, 1.0))
    assert all(s.fold_agreement is None for s in single.structures)


def test_a_missing_structure_is_predicted_zero_and_signals_are_one_network_per_fold() -> None:
    labels = heart()
    labels[labels == 1] = 0
    quality = frame_quality([logits_for(labels)], logits_for(labels), labels, (1.0, 1.0, 1.0))
    rv = quality.of(Structure.RV)
    assert rv is not None and rv.volume_ml == 0 and rv.entropy == (None,) and rv.self_dice[0] < 0.05
    calibration = QualityCalibration({s: identity_on_self_dice() for s in Structure}, flag_below=0.8)
    assert calibration.predict(rv) == 0.0


def test_calibration_file_round_trip_and_refusal(tmp_path: Path) -> None:
    calibration = QualityCalibration({s: identity_on_self_dice() for s in Structure}, 0.83, {"frames": 3})
    calibration.write(tmp_path)
    loaded = load_calibration(tmp_path)
    assert loaded == calibration
    signals = StructureQuality(Structure.LV, (0.9, 0.7), (0.1, 0.2), 0.95, 100.0)
    assert loaded.predict(signals) == pytest.approx(0.8)  # the mean of each fold's prediction
    assert load_calibration(tmp_path / "none") is None
    data = json.loads((tmp_path / CALIBRATION_FILE).read_text())
    del data["structures"]["MYO"]
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="no calibration for MYO"):
        load_calibration(tmp_path)


def synthetic_rows(seed: int = 0) -> list[calibrate.Row]:
    """Five folds of frames whose Dice follows the self-Dice, with a few failures (Dice 0.55 to 0.8)."""
    rng = np.random.default_rng(seed)
    rows = []
    for fold in range(5):
        for n in range(30):
            case = f"f{fold}_{n}"
            failed = n < 4
            for structure in Structure:
                dice = float(np.clip((rng.uniform(0.55, 0.78) if failed else rng.uniform(0.85, 0.97))
                                     + rng.normal(0, 0.01), 0, 1))
                self_dice = min(1.0, dice + 0.04 + rng.normal(0, 0.01))
                entropy = 0.3 - 0.25 * dice + rng.normal(0, 0.01)
                rows.append(calibrate.Row(case, fold, "ED", structure, dice, 3.0 if not failed else 12.0,
                                          (self_dice, entropy, math.log(100.0))))
    return rows


def test_cross_fold_measure_on_a_known_relation() -> None:
    rows = synthetic_rows()
    worse = [calibrate.Row(f"noisy-{r.case}", r.fold, r.phase, r.structure, max(0.0, r.dice - 0.3), r.hd95_mm,
                           (r.features[0] - 0.3, r.features[1] + 0.075, r.features[2])) for r in rows]
    measured = calibrate.cross_fold(rows, {"noisy": worse})
    noisy = measured["others"]["noisy"]
    assert noisy["frames"] == 150 and noisy["recall_dice_below_0_8"] == 1.0  # every degraded frame is found
    assert measured["frames"] == 150 and measured["frames_dice_below_0_8"] == 20
    assert measured["mae"] < 0.03  # the signals carry the Dice up to 0.01 noise
    assert measured["recall_dice_below_0_8"] >= 0.9 and measured["good_flagged"] <= 0.05
    assert set(measured["thresholds"]) == {"0", "1", "2", "3", "4"}
    with pytest.raises(ValueError, match="at least three folds"):
        calibrate.cross_fold([r for r in rows if r.fold < 2])


@pytest.fixture(scope="module")
def disagreeing_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped fold 0 twice: as fold_0, and as fold_1 with the RV and LV outputs swapped; with a calibration."""
    model = tmp_path_factory.mktemp("models") / "m"
    shutil.copytree(SHIPPED, model, ignore=shutil.ignore_patterns(CALIBRATION_FILE))
    checkpoint = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    for name, tensor in checkpoint["network_weights"].items():
        if ".seg_layers." in name:
            tensor[[1, 3]] = tensor[[3, 1]].clone()
    (model / "fold_1").mkdir()
    torch.save(checkpoint, model / "fold_1" / "checkpoint_final.pth")
    QualityCalibration({s: identity_on_self_dice() for s in Structure}, 0.8).write(model)
    return model


def test_a_frame_whose_folds_disagree_gets_a_low_predicted_dice(acdc_root: Path, disagreeing_model: Path) -> None:
    from workers.inference.predictor import Segmenter

    study = load_acdc_patient(acdc_root / "patient080", cine=False)
    image = study.frame(study.ed).image[30:190, 40:220, 1:4]  # type: ignore[arg-type]  # the heart, fewer tiles
    settings = Settings(device="cpu", use_mirroring=False, trusted_model_roots=[disagreeing_model.parent])
    alone = Segmenter.from_settings(settings.model_copy(update={"folds": ["0"]}), model_dir=disagreeing_model)
    both = Segmenter.from_settings(settings, model_dir=disagreeing_model)
    assert alone.fingerprint == model_fingerprint(disagreeing_model, ["0"], postprocessing=True)
    assert disagreeing_model / CALIBRATION_FILE in model_files(disagreeing_model, ["0"])  # covered by the fingerprint
    _, one = alone.segment_with_quality(image, study.spacing)
    _, two = both.segment_with_quality(image, study.spacing)
    assert one is not None and two is not None and one.n_folds == 1 and two.n_folds == 2
    for structure in (Structure.RV, Structure.LV):
        single, pair = one.of(structure), two.of(structure)
        assert single is not None and pair is not None
        assert single.predicted_dice is not None and single.predicted_dice > 0.85  # one network, sure of itself
        # the ensemble follows one fold: it agrees with itself and hardly with the other (measured: about 0.6)
        assert pair.fold_agreement is not None and pair.fold_agreement < 0.7
        assert pair.predicted_dice is not None and pair.predicted_dice <= pair.fold_agreement
        assert pair.predicted_dice < single.predicted_dice - 0.25
    myo_pair = two.of(Structure.MYO)
    assert myo_pair is not None and myo_pair.fold_agreement is not None and myo_pair.fold_agreement > 0.9


def test_fold_passes_agree_and_keep_each_fold(acdc_root: Path, disagreeing_model: Path) -> None:
    """Both ways of running the folds over a batch of tiles (back to back, and vectorised with ``torch.func``)
    give each fold the logits it has alone, and the same ensemble. (Mirroring is the same step for both; the
    nnU-Net agreement tests of test_inference.py cover it.)"""
    import copy

    from workers.inference.batched import FOLD_PASSES, BatchedSlidingWindow
    from workers.inference.predictor import Segmenter

    study = load_acdc_patient(acdc_root / "patient080", cine=False)
    image = study.frame(study.ed).image[30:190, 40:220, 2:3]  # type: ignore[index]  # one tile: the heart, a slice
    settings = Settings(device="cpu", use_mirroring=False, trusted_model_roots=[disagreeing_model.parent])
    both = Segmenter.from_settings(settings, model_dir=disagreeing_model)
    data = both._preprocess(image, [study.spacing[2], study.spacing[1], study.spacing[0]])["data"]
    alone = []
    for params in both._predictor.list_of_parameters:  # the same predictor with one fold's weights
        single = copy.copy(both._predictor)
        single.list_of_parameters = [params]
        alone.append(BatchedSlidingWindow(single, 8).logits_with_folds([data])[0][0])
    results = {fold_pass: BatchedSlidingWindow(both._predictor, 8, fold_pass=fold_pass).logits_with_folds([data])[0]
               for fold_pass in FOLD_PASSES}
    for fold_pass, (ensemble, per_fold) in results.items():
        assert len(per_fold) == 2, fold_pass
        for fold, single_logits in zip(per_fold, alone, strict=True):
            assert torch.allclose(fold.float(), single_logits.float(), atol=0.05), fold_pass  # half precision
        assert torch.allclose(ensemble.float(), (per_fold[0].float() + per_fold[1].float()) / 2, atol=0.01)
    assert torch.equal(results["loop"][0].argmax(0), results["vmap"][0].argmax(0))
    assert not torch.equal(alone[0].argmax(0), alone[1].argmax(0))  # the two folds do differ
