"""The quality signals of a frame, from the logits each fold computed (see :mod:`workers.quality`).

All signals are taken at the network's resolution, from each fold's logits (already averaged over its
mirrored copies) and from the ensemble's (the folds' mean), before resampling and postprocessing; the
volume comes from the final label map, with the image's spacing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from heartseg.labels import STRUCTURES
from workers.inference.batched import heart_uncertainty
from workers.quality import FrameQuality, StructureQuality


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    """Dice of two boolean masks; 1 when both are empty (they agree)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def frame_quality(fold_logits: Sequence[torch.Tensor], ensemble_logits: torch.Tensor, labels: np.ndarray,
                  spacing: Sequence[float]) -> FrameQuality:
    """The quality signals of one frame.

    Parameters
    ----------
    fold_logits
        Each fold's logits ``(classes, *spatial)`` at the network's resolution, in fold order.
    ensemble_logits
        The folds' mean logits (what the label map was made from).
    labels
        The final label map (any axis order), whose volumes are measured.
    spacing
        The label map's voxel size in mm (any order: only the product is used).
    """
    voxel_ml = math.prod(float(s) for s in spacing) / 1000.0
    classes = ensemble_logits.shape[0]
    ensemble_labels = ensemble_logits.float().argmax(0)
    per_fold = []
    for logits in fold_logits:
        log_p = torch.log_softmax(logits.float(), dim=0)
        p = log_p.exp()
        entropy = -(p * log_p).sum(0) / math.log(classes)
        per_fold.append((p, p.argmax(0), entropy))
    structures = []
    for structure in STRUCTURES:
        value = structure.label
        self_dice, entropies, agreements = [], [], []
        for p, fold_labels, entropy in per_fold:
            mine = fold_labels == value
            n_mine = int(mine.sum())
            p_s = p[value]
            denominator = float(p_s.sum()) + n_mine
            self_dice.append(0.0 if denominator == 0 else 2.0 * float(p_s[mine].sum()) / denominator)
            entropies.append(float(entropy[mine].mean()) if n_mine else None)
            agreements.append(_dice(mine, ensemble_labels == value))
        structures.append(StructureQuality(
            structure=structure, self_dice=tuple(self_dice), entropy=tuple(entropies),
            fold_agreement=float(np.mean(agreements)) if len(per_fold) > 1 else None,
            volume_ml=float(np.count_nonzero(labels == value)) * voxel_ml))
    return FrameQuality(uncertainty=heart_uncertainty(ensemble_logits), n_folds=len(per_fold),
                        structures=tuple(structures))
