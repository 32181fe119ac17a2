"""nnU-Net's postprocessing in the shipped model folder, applied by the Segmenter, and the per-frame uncertainty.

The model is run on one small real frame (patient080's ED frame, 216 x 256 x 6) without mirroring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import load_pickle
from nnunetv2.postprocessing.remove_connected_components import (
    apply_postprocessing,
    remove_all_but_largest_component_from_segmentation,
)

from db.session import open_record
from heartseg.models import POSTPROCESSING_FILE, model_files, model_fingerprint
from heartseg.settings import Settings
from heartseg.studies.acdc import load_acdc_patient
from heartseg.studies.model import Study
from scheduler.submit import register_model
from workers.inference.batched import heart_uncertainty
from workers.inference.predictor import Segmenter
from workers.pipeline import ModelInfo

MODEL_DIR = Settings().model_dir
PATIENT = "patient080"


def rules() -> tuple[list[object], list[dict[str, object]]]:
    fns, kwargs = load_pickle(str(MODEL_DIR / POSTPROCESSING_FILE))
    return list(fns), list(kwargs)


def covered_labels() -> set[int]:
    """Labels that some rule of the shipped postprocessing reduces to their largest component."""
    labels: set[int] = set()
    for kwargs in rules()[1]:
        target = kwargs["labels_or_regions"]
        labels |= set(target) if isinstance(target, list | tuple) else {int(target)}  # type: ignore[arg-type]
    return labels


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter.from_settings(Settings(device="cpu", use_mirroring=False))


@pytest.fixture(scope="module")
def raw_segmenter() -> Segmenter:
    return Segmenter.from_settings(Settings(device="cpu", use_mirroring=False, postprocessing=False))


@pytest.fixture(scope="module")
def study(acdc_root: Path) -> Study:
    return load_acdc_patient(acdc_root / PATIENT, cine=False)


def test_shipped_postprocessing_files_load_with_nnunetv2() -> None:
    """``postprocessing.pkl`` and ``.json`` lie beside the fold folders, in nnU-Net's format."""
    assert (MODEL_DIR / "fold_0").is_dir()
    fns, kwargs = rules()
    assert len(fns) == len(kwargs)
    assert all(fn is remove_all_but_largest_component_from_segmentation for fn in fns)
    decision = json.loads((MODEL_DIR / "postprocessing.json").read_text())
    assert decision["postprocessing_fns"] == [fn.__name__ for fn in fns]  # type: ignore[attr-defined]
    as_json = [{key: [int(x) for x in value] if isinstance(value, list | tuple) else int(value)  # type: ignore[call-overload]
                for key, value in k.items()} for k in kwargs]
    assert decision["postprocessing_kwargs"] == as_json
    assert {"input_folder", "postprocessed"} <= decision.keys()
    labels = np.zeros((8, 8, 2), np.uint8)
    assert np.array_equal(apply_postprocessing(labels, fns, kwargs), labels)


def test_island_far_from_the_heart_is_removed_where_a_rule_says(segmenter: Segmenter, acdc_root: Path) -> None:
    """A reference label map plus, per label, an island in a far corner: the postprocessing keeps the island of
    a label no rule covers and removes the others; the rest is as without the island."""
    assert segmenter.postprocessing
    study = load_acdc_patient(acdc_root / PATIENT, cine=False)
    reference = np.asarray(study.frame(study.ed).reference)  # type: ignore[arg-type]
    assert set(np.unique(reference)) == {0, 1, 2, 3}
    heart = segmenter.postprocess(reference)
    for label in (1, 2, 3):
        with_island = reference.copy()
        assert not with_island[:6, :6, :].any()
        with_island[:4, :4, 2:4] = label
        result = segmenter.postprocess(with_island)
        assert result.dtype == np.uint8 and result.shape == reference.shape
        island_kept = bool((result[:4, :4, 2:4] == label).all())
        assert island_kept == (label not in covered_labels()), label
        assert np.array_equal(result[6:, 6:, :], heart[6:, 6:, :])


def test_fingerprint_tells_postprocessed_masks_apart(tmp_path: Path, sqlite_url: str, segmenter: Segmenter,
                                                     raw_segmenter: Segmenter) -> None:
    with_pp = model_fingerprint(MODEL_DIR, postprocessing=True)
    without = model_fingerprint(MODEL_DIR)
    assert with_pp != without
    assert MODEL_DIR / POSTPROCESSING_FILE in model_files(MODEL_DIR, postprocessing=True)
    assert MODEL_DIR / POSTPROCESSING_FILE not in model_files(MODEL_DIR)
    assert (segmenter.fingerprint, raw_segmenter.fingerprint) == (with_pp, without)
    # the scheduler records what the worker's segmenter reports, setting on or off
    engine = open_record(sqlite_url)
    assert register_model(engine, Settings(), MODEL_DIR)[1] == segmenter.fingerprint
    assert register_model(engine, Settings(postprocessing=False), MODEL_DIR)[1] == raw_segmenter.fingerprint
    # a folder without the file: the fingerprint of the setting off (and what submit records for it)
    copy = tmp_path / "model"
    shutil.copytree(MODEL_DIR, copy, ignore=shutil.ignore_patterns("postprocessing.*"))
    assert model_fingerprint(copy) == without
    assert register_model(engine, Settings(model_dir=copy), copy)[1] == without


def test_setting_off_gives_the_network_labels(study: Study, segmenter: Segmenter, raw_segmenter: Segmenter,
                                              tmp_path: Path) -> None:
    """Off: the labels of a model folder without the file; on: those labels postprocessed by nnU-Net's rules."""
    frame = study.frame(study.ed)  # type: ignore[arg-type]
    raw, raw_uncertainty = raw_segmenter.segment_with_uncertainty(frame.image, study.spacing)
    copy = tmp_path / "model"
    shutil.copytree(MODEL_DIR, copy, ignore=shutil.ignore_patterns("postprocessing.*"))
    no_file = Segmenter(copy, trusted_roots=[copy], device="cpu", use_mirroring=False)
    assert not no_file.postprocessing and no_file.fingerprint == raw_segmenter.fingerprint
    assert np.array_equal(no_file.segment(frame.image, study.spacing), raw)
    assert raw_segmenter.postprocess(raw) is raw
    labels, uncertainty = segmenter.segment_with_uncertainty(frame.image, study.spacing)
    fns, kwargs = rules()
    assert np.array_equal(labels, apply_postprocessing(raw, fns, kwargs))
    assert raw_uncertainty is not None and uncertainty == pytest.approx(raw_uncertainty, abs=1e-6)  # from the logits


def test_uncertainty_of_logits() -> None:
    """Normalised entropy over the voxels whose argmax is heart: None without any, 1 for uniform logits."""
    logits = torch.full((4, 3, 5, 5), -20.0)
    logits[0] = 5.0
    assert heart_uncertainty(logits) is None  # background everywhere
    logits[1, 0, 0, 0] = 5.0 + 1e-3  # one heart voxel, nearly tied with the background
    tied = heart_uncertainty(logits)
    assert tied == pytest.approx(0.5, abs=1e-3)  # two of four classes share the mass: log 2 / log 4
    confident = torch.full((4, 2, 2, 2), -20.0)
    confident[3] = 20.0
    assert heart_uncertainty(confident.half()) == pytest.approx(0.0, abs=1e-6)
    assert heart_uncertainty(torch.zeros((4, 2, 2, 2)) + torch.tensor([0.0, 1e-4, 0.0, 0.0])[:, None, None, None]) \
        == pytest.approx(1.0, abs=1e-6)


def test_uncertainty_per_frame_is_higher_for_noise(study: Study, segmenter: Segmenter) -> None:
    """segment_frames hands (index, labels, quality) to its callback; by its uncertainty, a real frame is more
    certain than noise of the same shape and intensity statistics."""
    frame = study.frame(study.ed)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    image = frame.image.astype(np.float32)
    noise = rng.normal(image.mean(), image.std(), image.shape).astype(np.float32)
    seen: list[tuple[int, float | None]] = []
    labels = segmenter.segment_frames([image, noise], study.spacing, lambda index, _labels, quality: seen.append(
        (index, None if quality is None else quality.uncertainty)))
    assert [index for index, _ in seen] == [0, 1]
    real, noisy = seen[0][1], seen[1][1]
    # measured: about 0.06 for the frame, 0.27 for the noise (which the network still calls heart in places)
    assert real is not None and noisy is not None and labels[1].any()
    assert 0.0 <= real < noisy <= 1.0, (real, noisy)
    assert real == pytest.approx(segmenter.segment_with_uncertainty(image, study.spacing)[1], abs=1e-6)


def test_frame_by_frame_path_passes_no_uncertainty() -> None:
    seen: list[object] = []
    model = ModelInfo("f", lambda image, spacing: np.zeros(image.shape, np.uint8))
    model.segment_all([np.ones((2, 2, 2))], (1.0, 1.0, 1.0), lambda i, labels, u: seen.append((i, u)))
    assert seen == [(0, None)]


def test_nnunet_predictor_gives_the_same_uncertainty(study: Study, segmenter: Segmenter) -> None:
    """The uncertainty comes from the final logits, whichever code computed them (a crop of the frame: fewer tiles)."""
    image = study.frame(study.ed).image[30:190, 40:220, 1:4]  # type: ignore[arg-type]
    nnunet = Segmenter.from_settings(Settings(device="cpu", use_mirroring=False, predictor="nnunet"))
    theirs = nnunet.segment_with_uncertainty(image, study.spacing)
    ours = segmenter.segment_with_uncertainty(image, study.spacing)
    assert theirs[1] is not None and ours[1] is not None
    assert ours[1] == pytest.approx(theirs[1], abs=1e-4)
    assert (theirs[0] != ours[0]).mean() <= 1e-4
