"""What a user sees at the command line for bad input: one line naming the entry and the problem, no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from heartseg.settings import PROJECT_ROOT
from tests.phantom_cache import write_cohort

SHIPPED_MODEL = PROJECT_ROOT / "models" / "Dataset027_ACDC" / "nnUNetTrainer__HeartSegPlans__2d"


def heartseg(tmp_path: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in ``tmp_path`` with an embedded record and broker there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTSEG_")}
    env.update({"HEARTSEG_DATABASE_URL": f"sqlite:///{tmp_path / 'record.db'}",
                "HEARTSEG_EMBEDDED_BROKER_DIR": str(tmp_path / "broker"), "COLUMNS": "200", **variables})
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One good phantom, and entries that are not studies."""
    root = tmp_path_factory.mktemp("cli") / "cohort"
    write_cohort(root, 1, seed=4)
    (root / "phantom002").mkdir()
    (root / "phantom003").mkdir()
    (root / "phantom003" / "phantom003_frame01.nii.gz").write_bytes(b"")
    (root / "scan-notes.txt").write_text("to do")
    shutil.copytree(root / "phantom001", root / ("x" * 230))
    return root


def test_submit_lists_every_entry_it_skips_and_enqueues_the_rest(cohort: Path, tmp_path: Path) -> None:
    result = heartseg(tmp_path, "submit", str(cohort), "--run", "odd")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert f"skipped {cohort / 'phantom002'}: empty folder" in lines
    assert (f"skipped {cohort / 'phantom003'}: neither an ACDC patient folder (no Info.cfg) nor a DICOM series"
            in lines)
    assert f"skipped {cohort / 'scan-notes.txt'}: not a NIfTI file, ACDC patient folder or DICOM series" in lines
    assert any(line.startswith(f"skipped {(cohort / ('x' * 230)).resolve()}: study name 'xxxx")
               and line.endswith("has 230 characters; the record keeps at most 200") for line in lines), lines
    assert "run odd: 1 studies enqueued" in result.stdout
    assert "Traceback" not in result.stderr


def test_a_run_name_the_record_cannot_keep_is_one_line_and_status_2(cohort: Path, tmp_path: Path) -> None:
    result = heartseg(tmp_path, "submit", str(cohort), "--run", "r" * 300)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (f"error: run name '{'r' * 60}'... has 300 characters; the record "
                                              "keeps at most 200")


def test_a_source_with_no_study_names_what_it_skipped(tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.md").write_text("x")
    result = heartseg(tmp_path, "submit", str(empty))
    assert result.returncode == 2
    assert result.stderr == (f"error: {empty}: no studies found (ACDC patient folders with Info.cfg, DICOM series "
                             "or NIfTI files); skipped readme.md: not a NIfTI file, ACDC patient folder or DICOM "
                             "series; sub: empty folder\n")


def test_an_untrusted_model_folder_is_refused_by_name(tmp_path: Path) -> None:
    elsewhere = tmp_path / "downloads" / "model"
    shutil.copytree(SHIPPED_MODEL, elsewhere)
    (tmp_path / "in").mkdir()
    result = heartseg(tmp_path, "predict", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(elsewhere))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {elsewhere}: not inside a trusted model root")
    assert "HEARTSEG_TRUSTED_MODEL_ROOTS" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_corrupted_checkpoint_is_refused_by_name(tmp_path: Path) -> None:
    model = tmp_path / "models" / "model"
    shutil.copytree(SHIPPED_MODEL, model)
    checkpoint = next(model.glob("fold_*/checkpoint_final.pth"))
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    (tmp_path / "in").mkdir()
    result = heartseg(tmp_path, "predict", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(model),
                      HEARTSEG_TRUSTED_MODEL_ROOTS=f'["{tmp_path / "models"}"]')
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {checkpoint}: cannot load the checkpoint"), result.stderr
    assert "Traceback" not in result.stderr


def test_submit_refuses_an_untrusted_or_unreadable_model_before_recording_anything(cohort: Path,
                                                                                   tmp_path: Path) -> None:
    import sqlite3

    elsewhere = tmp_path / "downloads" / "model"
    shutil.copytree(SHIPPED_MODEL, elsewhere)
    result = heartseg(tmp_path, "submit", str(cohort), "--run", "untrusted", "--model", str(elsewhere))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(f"error: {elsewhere}: not inside a trusted model root")
    (elsewhere / "plans.json").write_text("{not json")
    result = heartseg(tmp_path, "submit", str(cohort), "--run", "unreadable", "--model", str(elsewhere),
                      HEARTSEG_TRUSTED_MODEL_ROOTS=f'["{tmp_path / "downloads"}"]')
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        f"error: {elsewhere}: the model folder cannot be read: JSONDecodeError: "), result.stderr
    with sqlite3.connect(tmp_path / "record.db") as record:
        assert record.execute("SELECT count(*) FROM runs").fetchone() == (0,)
        assert record.execute("SELECT count(*) FROM studies").fetchone() == (0,)
