"""The heartseg command line: evaluate folders, reference indices, and no torch at start-up."""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.test_metrics_against_references import perturb
from workers.evaluation import CSV_COLUMNS
from workers.metrics import compare_label_maps

HEARTSEG = [sys.executable, "-m", "scheduler.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HEARTSEG, *args], capture_output=True, text=True, timeout=300, check=False)


def test_cli_imports_neither_torch_nor_nnunet() -> None:
    code = "import sys, scheduler.cli, workers.evaluation, heartseg.sources, scheduler.reference_indices; " \
           "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'nnunetv2', 'celery')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.acdc
def test_evaluate_writes_the_csv_and_reports_bad_cases(acdc_root: Path, tmp_path: Path) -> None:
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    expected = {}
    for patient, how in (("patient001", "erode"), ("patient042", "shift"), ("patient085", "dilate")):
        source = acdc_root / patient / f"{patient}_frame01_gt.nii.gz"
        image = nib.load(source)
        reference = np.asarray(image.dataobj).astype(np.uint8)
        prediction = perturb(reference, how)
        shutil.copyfile(source, ref_dir / f"{patient}.nii.gz")
        nib.save(nib.Nifti1Image(prediction, image.affine, image.header), pred_dir / f"{patient}.nii.gz")
        expected[patient] = compare_label_maps(prediction, reference, image.header.get_zooms()[:3])
    # a reference without prediction, and a corrupt prediction
    shutil.copyfile(acdc_root / "patient002" / "patient002_frame01_gt.nii.gz", ref_dir / "patient002.nii.gz")
    shutil.copyfile(acdc_root / "patient003" / "patient003_frame01_gt.nii.gz", ref_dir / "patient003.nii.gz")
    (pred_dir / "patient003.nii.gz").write_bytes(b"\x1f\x8b\x08garbage")

    out_csv = tmp_path / "out" / "metrics.csv"
    result = run("evaluate", str(pred_dir), str(ref_dir), "--csv", str(out_csv))
    assert result.returncode == 1, result.stderr
    assert "patient002: " in result.stderr and "no prediction named patient002" in result.stderr
    assert "patient003: " in result.stderr and "corrupt or truncated" in result.stderr
    for structure in ("RV", "MYO", "LV"):
        assert structure in result.stdout

    with out_csv.open() as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    assert tuple(header) == CSV_COLUMNS
    assert [(r[0], r[1]) for r in rows] == [(p, s) for p in sorted(expected) for s in ("RV", "MYO", "LV")]
    for row in rows:
        metrics = expected[row[0]]
        m = {s.value: v for s, v in metrics.items()}[row[1]].as_dict()
        for column, value in zip(CSV_COLUMNS[2:], row[2:], strict=True):
            assert math.isclose(float(value), float(m[column]), rel_tol=1e-12), (row, column)


def test_evaluate_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = run("evaluate", str(tmp_path / "nope"), str(tmp_path))
    assert result.returncode == 2
    assert "nope: folder not found" in result.stderr


def test_a_frames_value_outside_the_set_is_refused_before_anything_is_recorded(tmp_path: Path) -> None:
    result = subprocess.run([*HEARTSEG, "submit", str(tmp_path), "--frames", "es"], capture_output=True, text=True,
                            timeout=300, check=False, cwd=tmp_path)
    assert result.returncode == 2
    message = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.stderr).split())  # without Rich's box
    assert "Invalid value for '--frames'" in message and "'es' is not one of 'ed-es', 'all'." in message
    assert list(tmp_path.iterdir()) == []  # no record, no broker folder


def test_heartseg_errors_are_one_line_with_status_2(tmp_path: Path) -> None:
    result = subprocess.run([*HEARTSEG, "report", "no-such-run"], capture_output=True, text=True, timeout=300,
                            check=False, cwd=tmp_path, env={**os.environ, "HEARTSEG_DATABASE_URL":
                                                            f"sqlite:///{tmp_path / 'record.db'}"})
    assert result.returncode == 2
    assert result.stderr == "error: no run named 'no-such-run' in the record; runs: none\n"


@pytest.mark.acdc
def test_reference_indices_prints_every_group(acdc_root: Path) -> None:
    result = run("reference-indices", str(acdc_root))
    assert result.returncode == 0, result.stderr
    for group in ("DCM", "HCM", "MINF", "NOR", "RV"):
        assert group in result.stdout
    assert "100 patients" in result.stdout
