"""Fit the quality calibration (signals to predicted Dice) on out-of-fold frames, and measure it honestly.

Input: ``oof_frames.csv`` of :mod:`workers.training.crossval` (one row per out-of-fold frame and structure:
the fold that segmented it, one network's signals, the actual Dice and HD95 of the final mask).

Per structure, the calibration is a linear score of the standardised single-network features
(:data:`workers.quality.FEATURES`: soft self-Dice, entropy, log volume), fitted by least squares to the
Dice, then an isotonic (monotone) regression of the Dice on that score (scikit-learn), stored as knots so
that predicting needs numpy alone (:class:`workers.quality.StructureCalibration`).

The flag threshold (``flag_below``): a frame is flagged when any structure's predicted Dice is below it; it
is the lowest threshold that flags at least :data:`TARGET_RECALL` of the frames with a structure's Dice
below :data:`BAD_DICE` among predictions the calibration did not see (leave-one-fold-out).

Measured as the QC is used: for each fold in turn, the calibration and the threshold are fitted on the
other folds' frames alone (the threshold from their own leave-one-fold-out predictions) and tested on the
held-out fold's frames; the figures pool the five held-out folds.

``python -m workers.training.calibrate [--frames CSV] [--also CSV ...] [--model DIR] [--json FILE]``
prints the cross-fold figures (``--also``: on further out-of-fold sets too, such as degraded images, each
frame predicted by the calibration fitted without its fold), writes them as JSON, and writes
``quality_calibration.json`` (fitted on every fold) into the model folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heartseg.labels import STRUCTURES, Structure
from heartseg.settings import get_settings
from workers.quality import QualityCalibration, StructureCalibration
from workers.training.crossval import DEFAULT_WORK

#: A frame is a failure when a structure's Dice is below this.
BAD_DICE = 0.8
#: Or when a structure's HD95 is above this (mm).
BAD_HD95_MM = 10.0
#: The share of failures the threshold must flag on the frames it was chosen on.
TARGET_RECALL = 0.9


@dataclass(frozen=True)
class Row:
    """One out-of-fold frame and structure."""

    case: str
    fold: int
    phase: str
    structure: Structure
    dice: float
    hd95_mm: float
    features: tuple[float, ...]


def read_rows(path: Path) -> list[Row]:
    """The rows of ``oof_frames.csv`` whose Dice is defined."""
    def num(text: str) -> float:
        return float(text) if text not in ("", None) else math.nan

    rows = []
    with path.open(newline="") as handle:
        for raw in csv.DictReader(handle):
            dice = num(raw["dice"])
            if not math.isfinite(dice):
                continue
            volume = num(raw["vol_pred_ml"])
            rows.append(Row(raw["case"], int(raw["fold"]), raw["phase"], Structure(raw["structure"]), dice,
                            num(raw["hd95_mm"]),
                            (num(raw["self_dice"]), num(raw["entropy"]), math.log(volume + 0.1))))
    return rows


def fit_structure(rows: Sequence[Row]) -> StructureCalibration:
    """One structure's calibration from its rows."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LinearRegression

    x = np.array([r.features for r in rows], dtype=float)
    y = np.array([r.dice for r in rows], dtype=float)
    mean = np.nanmean(x, axis=0)
    x = np.where(np.isfinite(x), x, mean)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    linear = LinearRegression().fit(z, y)
    score = linear.predict(z)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(score, y)
    return StructureCalibration(tuple(float(v) for v in mean), tuple(float(v) for v in scale),
                                tuple(float(v) for v in linear.coef_), float(linear.intercept_),
                                tuple(float(v) for v in iso.X_thresholds_), tuple(float(v) for v in iso.y_thresholds_))


def fit(rows: Sequence[Row], flag_below: float, fitted_on: dict[str, Any] | None = None) -> QualityCalibration:
    """A calibration of every structure fitted on ``rows``."""
    return QualityCalibration({s: fit_structure([r for r in rows if r.structure == s]) for s in STRUCTURES},
                              flag_below, fitted_on or {})


def predict(calibration: QualityCalibration, rows: Sequence[Row]) -> list[float]:
    """Predicted Dice of each row (single network, as during calibration)."""
    return [calibration.structures[r.structure].predict(r.features) if r.features[2] > math.log(0.1) + 1e-12
            else 0.0 for r in rows]


def held_out_predictions(rows: Sequence[Row]) -> list[float]:
    """Each row's predicted Dice from a calibration fitted on the other folds' rows."""
    folds = sorted({r.fold for r in rows})
    if len(folds) < 2:
        raise ValueError("leave-one-fold-out needs out-of-fold frames of at least two folds")
    predicted = [math.nan] * len(rows)
    for fold in folds:
        calibration = fit([r for r in rows if r.fold != fold], flag_below=BAD_DICE)
        held = [i for i, r in enumerate(rows) if r.fold == fold]
        for i, value in zip(held, predict(calibration, [rows[i] for i in held]), strict=True):
            predicted[i] = value
    return predicted


@dataclass(frozen=True)
class FrameOutcome:
    """One frame: its lowest predicted Dice, and whether it failed."""

    case: str
    min_predicted: float
    bad_dice: bool
    bad_hd95: bool


def frames(rows: Sequence[Row], predicted: Sequence[float]) -> list[FrameOutcome]:
    """Per frame: the lowest predicted Dice over its structures and its actual failures."""
    by_case: dict[str, list[tuple[Row, float]]] = {}
    for row, value in zip(rows, predicted, strict=True):
        by_case.setdefault(row.case, []).append((row, value))
    return [FrameOutcome(case, min(v for _, v in items), any(r.dice < BAD_DICE for r, _ in items),
                         any(math.isfinite(r.hd95_mm) and r.hd95_mm > BAD_HD95_MM for r, _ in items))
            for case, items in sorted(by_case.items())]


def choose_threshold(outcomes: Sequence[FrameOutcome], target: float = TARGET_RECALL) -> float:
    """The lowest threshold flagging at least ``target`` of the failed frames (``bad_dice``)."""
    bad = sorted(o.min_predicted for o in outcomes if o.bad_dice)
    if not bad:
        return BAD_DICE
    k = math.ceil(target * len(bad))  # flag the k lowest predictions of failed frames
    return float(np.nextafter(bad[k - 1], 1.0))


def cross_fold(rows: Sequence[Row], others: dict[str, Sequence[Row]] | None = None) -> dict[str, Any]:
    """Calibration and threshold fitted on four folds, tested on the fifth, rotated; pooled figures.

    ``others`` are further test sets by name (the same patients' images degraded, say): each of their rows is
    predicted by the calibration and threshold fitted without its fold, and measured the same way.
    """
    folds = sorted({r.fold for r in rows})
    if len(folds) < 3:
        raise ValueError("the nested cross-fold measure needs out-of-fold frames of at least three folds")
    sets = {"acdc": list(rows), **{name: list(extra) for name, extra in (others or {}).items()}}
    predicted = {name: [math.nan] * len(items) for name, items in sets.items()}
    flagged: dict[str, dict[str, bool]] = {name: {} for name in sets}
    thresholds: dict[int, float] = {}
    for fold in folds:
        train = [r for r in rows if r.fold != fold]
        threshold = choose_threshold(frames(train, held_out_predictions(train)))
        thresholds[fold] = threshold
        calibration = fit(train, threshold)
        for name, items in sets.items():
            held = [i for i, r in enumerate(items) if r.fold == fold]
            values = predict(calibration, [items[i] for i in held])
            for i, value in zip(held, values, strict=True):
                predicted[name][i] = value
            for outcome in frames([items[i] for i in held], values):
                flagged[name][outcome.case] = outcome.min_predicted < threshold
    result = summarize(rows, predicted["acdc"], frames(rows, predicted["acdc"]), flagged["acdc"])
    result["thresholds"] = {str(k): v for k, v in thresholds.items()}
    result["others"] = {name: summarize(items, predicted[name], frames(items, predicted[name]), flagged[name])
                        for name, items in sets.items() if name != "acdc"}
    return result


def summarize(rows: Sequence[Row], predicted: Sequence[float], outcomes: Sequence[FrameOutcome],
              flagged: dict[str, bool]) -> dict[str, Any]:
    """Recall of failures, good frames flagged, mean absolute error, per structure too."""
    bad = [o for o in outcomes if o.bad_dice]
    bad_hd = [o for o in outcomes if o.bad_hd95]
    good = [o for o in outcomes if not o.bad_dice and not o.bad_hd95]
    errors = np.abs(np.array(predicted) - np.array([r.dice for r in rows]))

    def share(items: Sequence[FrameOutcome]) -> float | None:
        return None if not items else sum(flagged[o.case] for o in items) / len(items)

    return {
        "frames": len(outcomes), "frames_dice_below_0_8": len(bad), "frames_hd95_above_10mm": len(bad_hd),
        "good_frames": len(good),
        "recall_dice_below_0_8": share(bad), "recall_hd95_above_10mm": share(bad_hd),
        "good_flagged": share(good), "mae": float(errors.mean()),
        "mae_by_structure": {s.value: float(errors[[r.structure == s for r in rows]].mean()) for s in STRUCTURES},
        "flagged_cases": sorted(case for case, f in flagged.items() if f),
    }


def main(argv: list[str] | None = None) -> None:
    """Measure cross-fold, fit on every fold, write the calibration into the model folder."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=Path, default=DEFAULT_WORK / "oof_frames.csv")
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped one)")
    parser.add_argument("--json", type=Path, default=None, help="write the cross-fold figures here")
    parser.add_argument("--also", type=Path, action="append", default=[],
                        help="another oof_frames.csv to test on (e.g. WORK/degraded-noise/oof_frames.csv)")
    args = parser.parse_args(argv)
    rows = read_rows(args.frames)
    measured = cross_fold(rows, {path.parent.name: read_rows(path) for path in args.also})
    print(json.dumps({k: v for k, v in measured.items() if k not in ("flagged_cases", "others")}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(measured, indent=2) + "\n")
    threshold = choose_threshold(frames(rows, held_out_predictions(rows)))
    folds = sorted({r.fold for r in rows})
    calibration = fit(rows, threshold, {"frames": len({r.case for r in rows}), "folds": folds,
                                        "source": "out-of-fold ACDC frames (python -m workers.training.crossval)"})
    model_dir = (args.model or get_settings().model_dir).resolve()
    print(calibration.write(model_dir), f"flag_below {threshold:.4f}")


if __name__ == "__main__":
    main()
