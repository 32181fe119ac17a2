"""The cross-validation tooling on one real out-of-fold patient: segment, evaluate, report, degrade."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from heartseg.settings import Settings
from heartseg.studies.acdc import load_acdc_patient
from workers.evaluation import evaluate_folders
from workers.training import crossval, crossval_report
from workers.training.degrade import DEGRADATIONS
from workers.training.split import fold_of

PATIENT = "patient080"  # fold 0's: the shipped fold never saw it


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, acdc_root: Path) -> Path:
    work = tmp_path_factory.mktemp("crossval")
    settings = Settings(device="cpu", use_mirroring=False, shared_data=acdc_root.parent.parent)
    assert fold_of(PATIENT) == 0
    crossval.segment(settings.model_dir, work, [0], patients=[PATIENT], settings=settings)
    crossval.evaluate(settings.model_dir, work, settings)
    return work


def test_out_of_fold_rows_measure_the_postprocessed_masks(work: Path) -> None:
    rows = list(csv.DictReader((work / "oof_frames.csv").open()))
    assert [(r["case"], r["structure"]) for r in rows] == [
        (f"{PATIENT}_frame{n:02d}", s) for n in (1, 10) for s in ("RV", "MYO", "LV")]
    assert {r["fold"] for r in rows} == {"0"} and {r["group"] for r in rows} == {"NOR"}
    signals = json.loads((work / "signals" / f"{PATIENT}_frame01.json").read_text())
    assert signals["fold"] == 0 and signals["quality"]["n_folds"] == 1
    # the raw masks, evaluated as `heartseg evaluate` does, give the CSV's Dice where postprocessing changed nothing
    raw = {(r.case, s.value): m.dice for r in evaluate_folders(work / "pred", work / "ref")
           for s, m in (r.metrics or {}).items()}
    for row in rows:
        dice = float(row["dice"])
        assert 0.8 < dice <= 1.0, row
        assert abs(dice - raw[(row["case"], row["structure"])]) < 0.02  # postprocessing removes specks only
        assert 0.5 < float(row["self_dice"]) <= 1.0 and 0.0 <= float(row["entropy"]) < 0.5
    indices = list(csv.DictReader((work / "oof_indices.csv").open()))
    assert len(indices) == 1 and indices[0]["patient"] == PATIENT
    assert abs(float(indices[0]["lv_ef_pct_pred"]) - float(indices[0]["lv_ef_pct_ref"])) < 10


def test_report_says_what_each_row_measures(work: Path) -> None:
    text = crossval_report.report(work)
    assert "out-of-fold" in text and "2 frames (ED and ES of 1 ACDC patients)" in text
    assert "| LV | ED | 1 |" in text and "| NOR |" in text


def test_a_second_segment_keeps_what_is_done(work: Path, acdc_root: Path) -> None:
    before = (work / "signals" / f"{PATIENT}_frame01.json").stat().st_mtime_ns
    settings = Settings(device="cpu", use_mirroring=False, shared_data=acdc_root.parent.parent)
    crossval.segment(settings.model_dir, work, [0], patients=[PATIENT], settings=settings)
    assert (work / "signals" / f"{PATIENT}_frame01.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_degradations_keep_geometry_and_change_the_image(name: str, acdc_root: Path) -> None:
    image = load_acdc_patient(acdc_root / PATIENT, cine=False).frames[0].image
    degraded = DEGRADATIONS[name](image, 1)
    assert degraded.shape == image.shape and degraded.dtype == np.float32
    assert np.isfinite(degraded).all()
    change = np.abs(degraded - image.astype(np.float32)).mean() / image.astype(np.float32).mean()
    assert change > 0.02, change  # measurably different, not a no-op
    assert np.array_equal(DEGRADATIONS[name](image, 1), degraded)  # deterministic
