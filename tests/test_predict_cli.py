"""``heartseg --version`` and ``heartseg predict``'s nnU-Net-style flags (-i -o -m -f -chk -device
--disable_tta --continue_prediction), through the command line as a user runs it."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

from heartseg.models import POSTPROCESSING_FILE, available_folds, model_fingerprint
from heartseg.settings import Settings

HEARTSEG = [sys.executable, "-m", "scheduler.cli"]
SHIPPED_MODEL = Settings.model_fields["model_dir"].default


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HEARTSEG, *args], capture_output=True, text=True, timeout=timeout, check=False)


def one_frame(folder: Path, tmp_path: Path) -> Path:
    """A small phantom's ED frame as ``folder/case_0000.nii.gz``."""
    from heartseg.phantom import draw_parameters, write_patient

    params = dataclasses.replace(draw_parameters("phantom001", np.random.default_rng(5)), n_frames=2, es_frame=2)
    write_patient(tmp_path / "cohort" / "phantom001", params)
    folder.mkdir()
    return Path(shutil.copyfile(tmp_path / "cohort" / "phantom001" / "phantom001_frame01.nii.gz",
                                folder / "case_0000.nii.gz"))


def test_version_prints_package_version_and_model_fingerprint() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(r"heartseg (\S+) model ([0-9a-f]{16}) folds ([0-9,]+)\n", result.stdout)
    assert match, result.stdout
    assert match[1] == version("heartseg")
    postprocessing = (SHIPPED_MODEL / POSTPROCESSING_FILE).is_file()  # as the record's register_model does
    assert match[2] == model_fingerprint(SHIPPED_MODEL, postprocessing=postprocessing)[:16]
    assert match[3].split(",") == list(available_folds(SHIPPED_MODEL))  # a five-fold model says so


def test_predict_with_nnunet_flags_then_continue_prediction_skips(tmp_path: Path) -> None:
    images, out = tmp_path / "in", tmp_path / "out"
    one_frame(images, tmp_path)
    flags = ["-i", str(images), "-o", str(out), "-m", str(SHIPPED_MODEL), "--disable_tta", "-device", "cpu"]
    first = run("predict", *flags, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "segmented 1 of 1 images" in first.stdout
    mask = out / "case.nii.gz"
    assert mask.is_file()
    before = mask.stat().st_mtime_ns

    again = run("predict", *flags, "--continue_prediction", "-f", "0", "-chk", "checkpoint_final.pth")
    assert again.returncode == 0, again.stderr
    assert "segmented 0 of 1 images" in again.stdout and "1 skipped" in again.stdout, again.stdout
    assert mask.stat().st_mtime_ns == before


def test_a_fold_the_model_lacks_is_one_line_exit_2(tmp_path: Path) -> None:
    result = run("predict", "-i", str(tmp_path), "-o", str(tmp_path / "out"), "-m", str(SHIPPED_MODEL), "-f", "0,7")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "fold 7 not found" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_folders_as_arguments_and_options_together_or_missing_are_refused(tmp_path: Path) -> None:
    both = run("predict", str(tmp_path), str(tmp_path / "out"), "-i", str(tmp_path))
    missing = run("predict", "-i", str(tmp_path))
    for result in (both, missing):
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "not both" in both.stderr and "missing the output folder" in missing.stderr


def test_predict_help_names_the_settings_variables() -> None:
    result = subprocess.run([*HEARTSEG, "predict", "--help"], capture_output=True, text=True, timeout=300,
                            check=False, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0
    for name in ("HEARTSEG_DEVICE", "HEARTSEG_CHECKPOINT_NAME", "HEARTSEG_USE_MIRRORING", "--disable_tta",
                 "--continue_prediction", "-chk", "-device"):
        assert name in result.stdout, name


def test_fast_is_one_fold_without_mirroring(tmp_path: Path) -> None:
    from scheduler.cli.common import fast_settings
    from scheduler.cli.tools import _predict_settings

    model = tmp_path / "m"
    shutil.copytree(SHIPPED_MODEL, model)
    shutil.copytree(model / "fold_0", model / "fold_3")
    settings = Settings(use_mirroring=True)
    fast = _predict_settings(settings, model, None, None, None, no_tta=False, fast=True)
    assert fast.folds == ["0"] and fast.use_mirroring is False
    chosen = _predict_settings(settings, model, ["3,0"], None, None, no_tta=False, fast=True)
    assert chosen.folds == ["3"] and chosen.use_mirroring is False  # the first fold asked for
    assert fast_settings(settings, model).folds == ["0"]
    full = _predict_settings(settings, model, None, None, None, no_tta=False)
    assert full.folds is None and full.use_mirroring is True  # every fold present, mirrored
