"""Metrics on shapes whose answers are known analytically, and the empty-mask conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from heartseg.labels import Structure
from workers.metrics import hd95_assd, structure_metrics, surface_distances, volume_ml

SPACING = (0.8, 1.2, 2.0)


def sphere(shape: tuple[int, int, int], centre_mm: tuple[float, ...], radius_mm: float,
           spacing: tuple[float, ...] = SPACING) -> np.ndarray:
    grids = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing, strict=True)), indexing="ij")
    distance2 = sum((g - c) ** 2 for g, c in zip(grids, centre_mm, strict=True))
    return distance2 <= radius_mm**2


def test_sphere_volume_within_one_percent() -> None:
    radius = 30.0
    mask = sphere((120, 80, 50), (48.0, 48.0, 50.0), radius)
    expected_ml = 4 / 3 * math.pi * radius**3 / 1000
    assert volume_ml(mask, SPACING) == pytest.approx(expected_ml, rel=0.01)


def test_identical_masks_are_perfect() -> None:
    labels = sphere((60, 40, 30), (24.0, 24.0, 30.0), 15.0).astype(np.uint8) * 3
    m = structure_metrics(labels, labels, SPACING, Structure.LV)
    assert (m.dice, m.iou, m.fp, m.fn, m.hd95_mm, m.assd_mm) == (1.0, 1.0, 0, 0, 0.0, 0.0)


@pytest.mark.parametrize(("axis", "voxels"), [(0, 5), (1, 4), (2, 3)])
def test_shifted_sphere_hausdorff_is_the_shift(axis: int, voxels: int) -> None:
    """Shifting a sphere by d mm moves its farthest surface point exactly d mm from the other surface."""
    shape = (100, 70, 50)
    centre = (40.0, 42.0, 50.0)
    a = sphere(shape, centre, 20.0)
    b = np.roll(a, voxels, axis=axis)
    shift_mm = voxels * SPACING[axis]
    d_ab, d_ba = surface_distances(a, b, SPACING)
    assert max(d_ab.max(), d_ba.max()) == pytest.approx(shift_mm, abs=1e-9)
    hd95, assd = hd95_assd(a, b, SPACING)
    assert 0 < assd < hd95 <= shift_mm


def test_concentric_spheres_distance_is_the_radius_difference() -> None:
    """Every point of one sphere's surface lies (r2 - r1) from the other's: HD95 and ASSD approach it."""
    spacing = (1.0, 1.0, 1.0)
    inner = sphere((80, 80, 80), (40.0, 40.0, 40.0), 20.0, spacing)
    outer = sphere((80, 80, 80), (40.0, 40.0, 40.0), 26.0, spacing)
    hd95, assd = hd95_assd(inner, outer, spacing)
    assert hd95 == pytest.approx(6.0, abs=1.0)  # within one voxel of the continuous answer
    assert assd == pytest.approx(6.0, abs=1.0)


def test_spacing_counts_thick_slices_in_mm() -> None:
    a = np.zeros((20, 20, 10), bool)
    a[5:15, 5:15, 2:6] = True
    b = np.roll(a, 2, axis=2)  # two slices
    d_ab, d_ba = surface_distances(a, b, (1.0, 1.0, 10.0))
    assert max(d_ab.max(), d_ba.max()) == pytest.approx(20.0)


def test_both_empty_gives_nan() -> None:
    empty = np.zeros((10, 10, 4), np.uint8)
    m = structure_metrics(empty, empty, (1.0, 1.0, 1.0), Structure.RV)
    assert math.isnan(m.dice) and math.isnan(m.iou)
    assert math.isnan(m.hd95_mm) and math.isnan(m.assd_mm)
    assert (m.tp, m.fp, m.fn, m.vol_pred_ml, m.vol_ref_ml) == (0, 0, 0, 0.0, 0.0)


@pytest.mark.parametrize("empty_side", ["pred", "ref"])
def test_one_empty_gives_zero_dice_and_infinite_distance(empty_side: str) -> None:
    empty = np.zeros((10, 10, 4), np.uint8)
    full = empty.copy()
    full[2:5, 2:5, 1:3] = 1
    pred, ref = (empty, full) if empty_side == "pred" else (full, empty)
    m = structure_metrics(pred, ref, (1.0, 1.0, 1.0), Structure.RV)
    assert m.dice == 0.0 and m.iou == 0.0
    assert math.isinf(m.hd95_mm) and math.isinf(m.assd_mm)


def test_mask_touching_the_border_matches_medpy() -> None:
    from medpy.metric import binary as medpy_binary

    a = np.zeros((12, 12, 5), bool)
    a[0:6, 0:6, 0:5] = True
    b = np.zeros_like(a)
    b[1:8, 0:5, 0:3] = True
    hd95, assd = hd95_assd(a, b, SPACING)
    assert hd95 == pytest.approx(medpy_binary.hd95(a, b, voxelspacing=SPACING), abs=1e-9)
    assert assd == pytest.approx(medpy_binary.assd(a, b, voxelspacing=SPACING), abs=1e-9)


def test_shape_and_spacing_are_checked() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        structure_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)), (1, 1, 1), Structure.LV)
    with pytest.raises(ValueError, match="spacing"):
        structure_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), (1, 1), Structure.LV)
