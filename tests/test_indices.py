"""Cardiac indices on hand-built volumes with known numbers and on the real ACDC references."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from heartseg.enums import PhaseSource
from scheduler.reference_indices import acdc_patient_folders, reference_indices
from workers.indices import bsa_mosteller, cardiac_indices, ejection_fraction, find_ed_es

SPACING = (2.0, 2.0, 5.0)  # 20 ul voxels: 50 voxels = 1 ml


def labels_with(lv_voxels: int, rv_voxels: int, myo_voxels: int) -> np.ndarray:
    labels = np.zeros(100 * 100 * 4, np.uint8)
    labels[:lv_voxels] = 3
    labels[lv_voxels : lv_voxels + rv_voxels] = 1
    labels[lv_voxels + rv_voxels : lv_voxels + rv_voxels + myo_voxels] = 2
    return labels.reshape(100, 100, 4)


def test_known_volumes_give_known_indices() -> None:
    ed = labels_with(lv_voxels=6000, rv_voxels=7500, myo_voxels=5000)  # 120 ml, 150 ml, 100 ml
    es = labels_with(lv_voxels=2400, rv_voxels=4500, myo_voxels=5200)  # 48 ml, 90 ml
    result = cardiac_indices({1: ed, 9: es}, SPACING, ed_frame=1, es_frame=9, height_cm=180, weight_kg=80,
                             heart_rate_bpm=60)
    assert result.phase_source is PhaseSource.STATED
    assert (result.lv_edv_ml, result.lv_esv_ml, result.lv_sv_ml) == pytest.approx((120, 48, 72))
    assert result.lv_ef_pct == pytest.approx(60.0)
    assert (result.rv_edv_ml, result.rv_esv_ml, result.rv_sv_ml) == pytest.approx((150, 90, 60))
    assert result.rv_ef_pct == pytest.approx(40.0)
    assert result.myo_mass_g == pytest.approx(105.0)  # 100 ml x 1.05 g/ml, at ED
    assert result.bsa_m2 == pytest.approx(2.0)  # sqrt(180 x 80 / 3600)
    assert result.lv_edv_index_ml_m2 == pytest.approx(60.0)
    assert result.myo_mass_index_g_m2 == pytest.approx(52.5)
    assert result.lv_cardiac_output_l_min == pytest.approx(4.32)  # 72 ml x 60 / min


def test_unknown_height_leaves_indexed_values_empty() -> None:
    frames = {1: labels_with(100, 100, 100), 2: labels_with(50, 50, 100)}
    result = cardiac_indices(frames, SPACING, ed_frame=1, es_frame=2)
    assert result.bsa_m2 is None and result.lv_edv_index_ml_m2 is None and result.lv_cardiac_output_l_min is None


def test_full_cine_finds_ed_and_es_from_lv_volume() -> None:
    lv_by_frame = {1: 5000, 2: 5600, 3: 4000, 4: 2100, 5: 2000, 6: 3500}
    frames = {f: labels_with(v, 1000, 1000) for f, v in lv_by_frame.items()}
    result = cardiac_indices(frames, SPACING)
    assert (result.ed_frame, result.es_frame) == (2, 5)
    assert result.phase_source is PhaseSource.LV_VOLUME
    assert result.lv_ef_pct == pytest.approx((5600 - 2000) / 5600 * 100)


def test_helpers() -> None:
    assert find_ed_es({3: 10.0, 7: 10.0, 9: 2.0}) == (3, 9)  # ties: the earlier frame
    assert math.isnan(ejection_fraction(0.0, 0.0))
    assert bsa_mosteller(170, 70) == pytest.approx(math.sqrt(170 * 70 / 3600))
    with pytest.raises(ValueError, match="positive"):
        bsa_mosteller(0, 70)
    with pytest.raises(ValueError, match="no label map"):
        cardiac_indices({1: labels_with(1, 1, 1)}, SPACING, ed_frame=1, es_frame=4)
    with pytest.raises(ValueError, match="at least two"):
        cardiac_indices({1: labels_with(1, 1, 1)}, SPACING)


@pytest.mark.acdc
def test_reference_ef_matches_what_the_acdc_groups_imply(acdc_root: Path) -> None:
    results = list(reference_indices(acdc_patient_folders(acdc_root)))
    assert [r.error for r in results if r.error] == []
    assert len(results) == 100
    by_group: dict[str, list[float]] = {}
    for r in results:
        assert r.indices is not None and r.group is not None
        by_group.setdefault(r.group, []).append(r.indices.lv_ef_pct)
        assert r.indices.lv_edv_ml > r.indices.lv_esv_ml > 0
        assert r.indices.myo_mass_g > 0 and r.indices.bsa_m2 is not None
    assert {g: len(v) for g, v in by_group.items()} == {"DCM": 20, "HCM": 20, "MINF": 20, "NOR": 20, "RV": 20}
    assert max(by_group["DCM"]) < 35
    assert max(by_group["MINF"]) < 45
    assert min(by_group["HCM"]) > 45
    assert min(by_group["NOR"]) > 45
