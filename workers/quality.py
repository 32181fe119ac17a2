"""A predicted Dice for every frame and structure, without reference masks.

The segmenter measures, for every frame, signals of how sure the model is of each structure
(:mod:`workers.inference.quality_signals`), from what inference computes anyway:

- ``self_dice``: the soft Dice of one network's softmax probabilities against its own argmax labels
  (``2 * sum(p_s over voxels labelled s) / (sum(p_s) + #labelled s)``), the Dice the network expects of
  itself; one value per fold;
- ``entropy``: the mean normalised softmax entropy (0 to 1) over the voxels one network labels as the
  structure; one value per fold;
- ``fold_agreement``: the mean Dice between each fold's labels and the ensemble's labels (None with
  one fold): where independently trained folds disagree, the segmentation is unreliable;
- ``volume_ml``: the structure's volume in the final label map, with the image's spacing.

A :class:`QualityCalibration` (``quality_calibration.json`` in the model folder, fitted by
:mod:`workers.training.calibrate` on out-of-fold frames only) maps one network's signals to the Dice that
network's mask has against a reference. The signals are computed the same way when calibrating and when
predicting: during calibration each out-of-fold frame is segmented by the one fold that never saw it, so
each frame has one network's signals; a five-fold prediction computes the same single-network signals
for each fold, maps each through the calibration, and averages the five predicted Dice. The fold agreement
cannot be calibrated that way (no frame was unseen by two folds), so it caps the prediction instead:
the ensemble's predicted Dice is at most the folds' mean agreement with it. A structure missing from the
final label map gets 0.

Numpy only: the CPU worker, the report and the calibration use it without torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from heartseg.labels import STRUCTURES, Structure
from heartseg.models import CALIBRATION_FILE

CALIBRATION_FORMAT = "heartseg-quality-calibration/1"
#: The single-network features, in the order the calibration's coefficients use them.
FEATURES = ("self_dice", "entropy", "log_volume_ml")


@dataclass(frozen=True)
class StructureQuality:
    """The quality signals of one structure in one frame, and its predicted Dice."""

    structure: Structure
    self_dice: tuple[float, ...]
    """One network's soft Dice against its own labels, per fold (in fold order)."""
    entropy: tuple[float | None, ...]
    """Mean normalised entropy over the voxels the fold labels as the structure, per fold (None: no voxel)."""
    fold_agreement: float | None
    """Mean Dice of each fold's labels against the ensemble's; None with one fold."""
    volume_ml: float
    """The structure's volume in the final (exported, postprocessed) label map."""
    predicted_dice: float | None = None
    """The calibrated Dice estimate of the final mask; None without a calibration."""

    def features(self, fold: int) -> list[float]:
        """Fold ``fold``'s single-network features, in :data:`FEATURES` order (NaN where undefined)."""
        entropy = self.entropy[fold]
        return [self.self_dice[fold], math.nan if entropy is None else entropy, math.log(self.volume_ml + 0.1)]


@dataclass(frozen=True)
class FrameQuality:
    """What the segmenter measured of one frame's quality."""

    uncertainty: float | None
    """Mean normalised entropy of the ensemble over the voxels predicted as heart (0 to 1; None: no heart)."""
    n_folds: int
    structures: tuple[StructureQuality, ...] = field(default_factory=tuple)

    def of(self, structure: Structure) -> StructureQuality | None:
        """The signals of ``structure``, if measured."""
        return next((s for s in self.structures if s.structure == structure), None)


@dataclass(frozen=True)
class StructureCalibration:
    """One structure's map from single-network features to Dice: a linear score, then a monotone fit."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    knots_x: tuple[float, ...]
    knots_y: tuple[float, ...]

    def predict(self, features: Sequence[float]) -> float:
        """The predicted Dice of one network's mask (0 to 1); undefined features count as the training mean."""
        x = np.asarray(features, dtype=float)
        z = (np.where(np.isfinite(x), x, np.asarray(self.mean)) - np.asarray(self.mean)) / np.asarray(self.scale)
        score = float(self.intercept + np.dot(np.asarray(self.coef), z))
        return float(np.clip(np.interp(score, self.knots_x, self.knots_y), 0.0, 1.0))

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored in the calibration file."""
        return {"mean": list(self.mean), "scale": list(self.scale), "coef": list(self.coef),
                "intercept": self.intercept, "knots_x": list(self.knots_x), "knots_y": list(self.knots_y)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StructureCalibration:
        """Read the JSON form (see :meth:`to_json`)."""
        def floats(key: str) -> tuple[float, ...]:
            return tuple(float(v) for v in data[key])
        calibration = cls(floats("mean"), floats("scale"), floats("coef"), float(data["intercept"]),
                          floats("knots_x"), floats("knots_y"))
        n = len(FEATURES)
        if not (len(calibration.mean) == len(calibration.scale) == len(calibration.coef) == n) \
                or len(calibration.knots_x) != len(calibration.knots_y) or not calibration.knots_x:
            raise ValueError("a structure's calibration needs one mean, scale and coefficient per feature "
                             f"({', '.join(FEATURES)}) and as many knots_x as knots_y")
        return calibration


@dataclass(frozen=True)
class QualityCalibration:
    """A model's calibration from quality signals to predicted Dice (``quality_calibration.json``)."""

    structures: dict[Structure, StructureCalibration]
    flag_below: float
    """The recommended threshold of the ``low_predicted_dice`` flag, chosen with the calibration."""
    fitted_on: dict[str, Any] = field(default_factory=dict)
    """What it was fitted on (frames, folds, model fingerprint), as written by the fit."""

    def predict(self, signals: StructureQuality) -> float:
        """The predicted Dice of the final mask of one structure (see the module's description)."""
        if signals.volume_ml <= 0:
            return 0.0
        calibration = self.structures[signals.structure]
        per_fold = [calibration.predict(signals.features(f)) for f in range(len(signals.self_dice))]
        predicted = float(np.mean(per_fold))
        if signals.fold_agreement is not None:
            predicted = min(predicted, signals.fold_agreement)
        return float(np.clip(predicted, 0.0, 1.0))

    def apply(self, quality: FrameQuality) -> FrameQuality:
        """``quality`` with every structure's predicted Dice filled in."""
        structures = tuple(StructureQuality(s.structure, s.self_dice, s.entropy, s.fold_agreement, s.volume_ml,
                                            self.predict(s)) for s in quality.structures)
        return FrameQuality(quality.uncertainty, quality.n_folds, structures)

    def to_json(self) -> dict[str, Any]:
        """The file's content."""
        return {"format": CALIBRATION_FORMAT, "features": list(FEATURES), "flag_below": self.flag_below,
                "structures": {s.value: c.to_json() for s, c in self.structures.items()},
                "fitted_on": self.fitted_on}

    def write(self, model_dir: Path) -> Path:
        """Write the calibration into a model folder; returns the file."""
        path = model_dir / CALIBRATION_FILE
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QualityCalibration:
        """Read a calibration's JSON; ValueError when it is not one this HeartSeg reads."""
        if data.get("format") != CALIBRATION_FORMAT or list(data.get("features", [])) != list(FEATURES):
            raise ValueError(f"not a {CALIBRATION_FORMAT} file with features {', '.join(FEATURES)}")
        structures = {Structure(name): StructureCalibration.from_json(c) for name, c in data["structures"].items()}
        missing = [s.value for s in STRUCTURES if s not in structures]
        if missing:
            raise ValueError(f"no calibration for {', '.join(missing)}")
        return cls(structures, float(data["flag_below"]), dict(data.get("fitted_on", {})))


def load_calibration(model_dir: Path) -> QualityCalibration | None:
    """The model folder's calibration, or None when it has none.

    Raises ValueError naming the file when it exists but cannot be read.
    """
    path = model_dir / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        return QualityCalibration.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: cannot read the quality calibration ({exc})") from exc
