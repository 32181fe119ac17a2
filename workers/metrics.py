"""Segmentation agreement metrics: pure functions on label maps and voxel spacing.

Nothing here reads files or knows about Celery or the database. Distances are in
millimetres, computed with the voxel spacing of the image (a 10 mm slice gap counts as
10 mm); volumes are in millilitres.

Empty structures (the convention of nnU-Net's ``compute_metrics`` for Dice):

* both prediction and reference empty: Dice and IoU are NaN, HD95 and ASSD are NaN
  (there is nothing to compare; such rows are reported, not dropped);
* exactly one empty: Dice and IoU are 0, HD95 and ASSD are ``inf`` (no surface to
  measure a distance to).

Surface distances follow MedPy's definition (``medpy.metric.binary.hd95`` / ``assd``): a
surface voxel is a foreground voxel with a 6-connected (3D) background neighbour or on
the image border; the distance from each surface voxel of one mask to the nearest surface
voxel of the other is taken with an exact Euclidean distance transform in mm. HD95 is
the 95th percentile of both directed distance sets together; ASSD is the mean of both sets
together, ``(sum d(A->B) + sum d(B->A)) / (|surface A| + |surface B|)``, the classic
definition (Heimann et al., IEEE TMI 2009) and MedPy 0.5's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from heartseg.labels import STRUCTURES, Structure


@dataclass(frozen=True)
class StructureMetrics:
    """Agreement of one structure between a predicted and a reference label map."""

    dice: float
    iou: float
    tp: int
    fp: int
    fn: int
    hd95_mm: float
    assd_mm: float
    vol_pred_ml: float
    vol_ref_ml: float

    def as_dict(self) -> dict[str, float | int]:
        """The fields as a plain dictionary (CSV and record rows)."""
        return asdict(self)


def voxel_volume_ml(spacing: Sequence[float]) -> float:
    """Volume of one voxel in ml (spacing in mm)."""
    return float(np.prod(np.asarray(spacing, dtype=np.float64))) / 1000.0


def volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of a binary mask in ml."""
    return int(np.count_nonzero(mask)) * voxel_volume_ml(spacing)


def overlap_counts(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int]:
    """True positive, false positive and false negative voxel counts of two binary masks."""
    pred = pred.astype(bool, copy=False)
    ref = ref.astype(bool, copy=False)
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(ref)) - tp
    return tp, fp, fn


def dice_from_counts(tp: int, fp: int, fn: int) -> float:
    """Dice = 2TP / (2TP + FP + FN); NaN when both masks are empty."""
    denominator = 2 * tp + fp + fn
    return math.nan if denominator == 0 else 2 * tp / denominator


def iou_from_counts(tp: int, fp: int, fn: int) -> float:
    """IoU = TP / (TP + FP + FN); NaN when both masks are empty."""
    denominator = tp + fp + fn
    return math.nan if denominator == 0 else tp / denominator


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: from each surface voxel of ``a`` to ``b``'s surface, and back.

    Both masks must be non-empty. The work is done on the bounding box of both masks
    (with a margin), which gives exactly the distances of the full grid.
    """
    a = a.astype(bool, copy=False)
    b = b.astype(bool, copy=False)
    if not a.any() or not b.any():
        raise ValueError("surface distances need two non-empty masks")
    a, b = _crop_to_union(a, b)
    surface_a = _surface(a)
    surface_b = _surface(b)
    sampling = tuple(float(s) for s in spacing)
    to_b = ndimage.distance_transform_edt(~surface_b, sampling=sampling)
    to_a = ndimage.distance_transform_edt(~surface_a, sampling=sampling)
    return to_b[surface_a], to_a[surface_b]


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask ^ ndimage.binary_erosion(mask, structure=structure, iterations=1)


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union plus one voxel.

    Inside the image the margin keeps every surface voxel a surface voxel; where the box
    touches the image border it is not extended, so border voxels stay border voxels.
    """
    coords = np.argwhere(a | b)
    low = np.maximum(coords.min(axis=0) - 1, 0)
    high = np.minimum(coords.max(axis=0) + 2, a.shape)
    window = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
    return a[window], b[window]


def hd95_assd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple[float, float]:
    """95th-percentile Hausdorff distance and average symmetric surface distance in mm.

    NaN for both when both masks are empty, ``inf`` for both when exactly one is.
    """
    has_pred, has_ref = bool(np.any(pred)), bool(np.any(ref))
    if not has_pred and not has_ref:
        return math.nan, math.nan
    if not has_pred or not has_ref:
        return math.inf, math.inf
    d_pred_ref, d_ref_pred = surface_distances(pred, ref, spacing)
    both = np.hstack((d_pred_ref, d_ref_pred))
    hd95 = float(np.percentile(both, 95))
    assd = float(both.mean())
    return hd95, assd


def structure_metrics(
    pred_labels: np.ndarray, ref_labels: np.ndarray, spacing: Sequence[float], structure: Structure
) -> StructureMetrics:
    """All metrics of one structure between two label maps of the same shape."""
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"label maps differ in shape: prediction {pred_labels.shape}, reference {ref_labels.shape}")
    if len(spacing) != pred_labels.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {pred_labels.ndim}D label map")
    pred = pred_labels == structure.label
    ref = ref_labels == structure.label
    tp, fp, fn = overlap_counts(pred, ref)
    hd95, assd = hd95_assd(pred, ref, spacing)
    voxel_ml = voxel_volume_ml(spacing)
    return StructureMetrics(
        dice=dice_from_counts(tp, fp, fn),
        iou=iou_from_counts(tp, fp, fn),
        tp=tp,
        fp=fp,
        fn=fn,
        hd95_mm=hd95,
        assd_mm=assd,
        vol_pred_ml=(tp + fp) * voxel_ml,
        vol_ref_ml=(tp + fn) * voxel_ml,
    )


def compare_label_maps(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    spacing: Sequence[float],
    structures: Sequence[Structure] = STRUCTURES,
) -> dict[Structure, StructureMetrics]:
    """Metrics of every structure (RV, MYO, LV by default) between two label maps."""
    return {s: structure_metrics(pred_labels, ref_labels, spacing, s) for s in structures}
