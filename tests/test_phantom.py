"""The phantom cohort: ACDC layout, every phase, and masks that agree with the analytic truth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from heartseg.phantom import analytic_volumes_ml, draw_parameters, phase_geometry, render_labels
from heartseg.studies import open_study
from workers.indices import cardiac_indices
from workers.metrics import volume_ml


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantoms")
    subprocess.run([sys.executable, "-m", "scheduler.cli", "phantom", str(out), "--patients", "3", "--seed", "5"],
                   check=True, capture_output=True, timeout=300)
    return out


def test_cohort_is_in_acdc_layout_with_every_phase(cohort: Path) -> None:
    folders = sorted(p.name for p in cohort.iterdir())
    assert folders == ["phantom001", "phantom002", "phantom003"]
    for name in folders:
        truth = json.loads((cohort / name / "Truth.json").read_text())
        study = open_study(cohort / name)
        assert len(study.frames) == study.info.n_frames == len(truth["frames"])
        assert (study.ed, study.es) == (truth["ed_frame"], truth["es_frame"])
        assert [f.number for f in study.frames_with_reference()] == [study.ed, study.es]
        assert study.info.group == "PHANTOM"
        # the ES frame file is the cine's ES phase
        cine = nib.load(cohort / name / f"{name}_4d.nii.gz")
        np.testing.assert_array_equal(
            study.frame(study.es).image, np.asarray(cine.dataobj[..., study.es - 1], dtype=np.float32)
        )


def test_reference_masks_agree_with_the_analytic_truth(cohort: Path) -> None:
    for folder in sorted(cohort.iterdir()):
        truth = json.loads((folder / "Truth.json").read_text())
        study = open_study(folder)
        labels = {f.number: f.reference for f in study.frames_with_reference() if f.reference is not None}
        got = cardiac_indices(labels, study.spacing, ed_frame=study.ed, es_frame=study.es)
        assert got.lv_edv_ml == pytest.approx(truth["lv_edv_ml"], rel=0.03)
        assert got.rv_edv_ml == pytest.approx(truth["rv_edv_ml"], rel=0.03)
        assert got.myo_mass_g == pytest.approx(truth["myo_mass_g"], rel=0.04)
        assert got.lv_ef_pct == pytest.approx(truth["lv_ef_pct"], abs=1.5)
        assert got.rv_ef_pct == pytest.approx(truth["rv_ef_pct"], abs=1.5)


def test_truth_volumes_are_exact_for_the_lv_and_consistent_over_the_cycle() -> None:
    params = draw_parameters("phantom900", np.random.default_rng(3))
    ed = analytic_volumes_ml(phase_geometry(1, params))
    es = analytic_volumes_ml(phase_geometry(params.es_frame, params))
    assert ed["lv_ml"] == pytest.approx(params.lv_edv_ml, rel=1e-12)
    assert es["lv_ml"] == pytest.approx(params.lv_edv_ml * (1 - params.lv_ef), rel=1e-12)
    for frame in range(1, params.n_frames + 1):  # incompressible myocardium
        assert analytic_volumes_ml(phase_geometry(frame, params))["myo_ml"] == pytest.approx(params.myo_ml, rel=1e-9)


def test_fine_sampling_converges_to_the_analytic_volumes() -> None:
    """On a 0.5 mm grid the rendered masks approach the closed-form volumes (the RV's included)."""
    import dataclasses

    params = draw_parameters("phantom901", np.random.default_rng(4))
    fine = dataclasses.replace(
        params,
        spacing=(0.5, 0.5, 0.5),
        shape=tuple(int(n * s / 0.5) for n, s in zip(params.shape, params.spacing, strict=True)),
    )
    geo = phase_geometry(1, params)
    labels = render_labels(geo, fine, subsamples=1)
    truth = analytic_volumes_ml(geo)
    assert volume_ml(labels == 3, fine.spacing) == pytest.approx(truth["lv_ml"], rel=0.01)
    assert volume_ml(labels == 2, fine.spacing) == pytest.approx(truth["myo_ml"], rel=0.01)
    assert volume_ml(labels == 1, fine.spacing) == pytest.approx(truth["rv_ml"], rel=0.01)


def test_parameters_span_the_clinical_ef_range() -> None:
    rng = np.random.default_rng(0)
    efs = [draw_parameters(f"p{i}", rng).lv_ef for i in range(400)]
    assert min(efs) >= 0.15 and max(efs) <= 0.75
    assert min(efs) < 0.2 and max(efs) > 0.7
