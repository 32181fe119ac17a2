"""``heartseg evaluate``: --pred/--ref, --labels numberings and nnU-Net's summary.json, on small synthetic maps."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from workers.evaluation import CSV_COLUMNS

HEARTSEG = [sys.executable, "-m", "scheduler.cli"]
AFFINE = np.diag([1.5, 1.5, 8.0, 1.0])
#: ACDC value -> ukbb_cardiac / M&Ms value (LV=1, MYO=2, RV=3).
SWAP = {0: 0, 1: 3, 2: 2, 3: 1}
#: CSV column -> summary.json metric name.
JSON_NAMES = {"dice": "Dice", "iou": "IoU", "tp": "TP", "fp": "FP", "fn": "FN", "hd95_mm": "HD95_mm",
              "assd_mm": "ASSD_mm", "vol_pred_ml": "vol_pred_ml", "vol_ref_ml": "vol_ref_ml"}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HEARTSEG, *args], capture_output=True, text=True, timeout=120, check=False)


def heart(shift: int = 0, rv: bool = True) -> np.ndarray:
    """A 24x24x4 ACDC-numbered map: LV disc, MYO ring, RV blob; ``shift`` moves it, ``rv`` keeps the RV."""
    x, y = np.mgrid[:24, :24]
    r = np.hypot(x - 12 - shift, y - 12)
    plane = np.zeros((24, 24), dtype=np.uint8)
    plane[r < 7] = 2
    plane[r < 4] = 3
    if rv:
        plane[(np.abs(x - 12 - shift) < 4) & (y >= 19 + shift % 2) & (y < 23)] = 1
    return np.repeat(plane[:, :, None], 4, axis=2)


def write(folder: Path, name: str, labels: np.ndarray, mapping: dict[int, int] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if mapping is not None:
        labels = np.vectorize(mapping.__getitem__, otypes=[np.uint8])(labels)
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), AFFINE), folder / f"{name}.nii.gz")


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Three cases in ACDC numbering, one with the RV missing from the prediction (HD95 infinite)."""
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    for name, shift, rv in (("case_a", 1, True), ("case_b", 2, True), ("case_c", 0, False)):
        write(ref, name, heart())
        write(pred, name, heart(shift, rv))
    return pred, ref


def read_csv(path: Path) -> list[list[str]]:
    with path.open() as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    return rows[1:]


def test_pred_ref_options_give_the_positional_forms_csv(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, ref = folders
    positional = run("evaluate", str(pred), str(ref), "--csv", str(tmp_path / "a.csv"))
    options = run("evaluate", "--ref", str(ref), "--pred", str(pred), "--csv", str(tmp_path / "b.csv"))
    assert positional.returncode == 0, positional.stderr
    assert options.returncode == 0, options.stderr
    rows = read_csv(tmp_path / "a.csv")
    assert len(rows) == 9
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_labels_option_evaluates_another_numbering(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, ref = folders
    swapped_pred, swapped_ref = tmp_path / "swapped_pred", tmp_path / "swapped_ref"
    for source, target in ((pred, swapped_pred), (ref, swapped_ref)):
        for path in sorted(source.iterdir()):
            write(target, path.name.removesuffix(".nii.gz"), np.asarray(nib.load(path).dataobj), SWAP)
    acdc = run("evaluate", str(pred), str(ref), "--csv", str(tmp_path / "acdc.csv"))
    swapped = run("evaluate", "--pred", str(swapped_pred), "--ref", str(swapped_ref), "--labels", "LV=1,MYO=2,RV=3",
                  "--csv", str(tmp_path / "swapped.csv"))
    assert acdc.returncode == 0, acdc.stderr
    assert swapped.returncode == 0, swapped.stderr
    acdc_rows, swapped_rows = read_csv(tmp_path / "acdc.csv"), read_csv(tmp_path / "swapped.csv")
    assert acdc_rows == swapped_rows  # every metric, Dice included, per case and structure
    dice = {(r[0], r[1]): float(r[2]) for r in acdc_rows}
    assert 0 < dice["case_a", "LV"] < 1 and dice["case_c", "RV"] == 0.0

    # read with ACDC's numbering, the swapped maps give different (wrong) RV and LV rows
    wrong = run("evaluate", str(swapped_pred), str(swapped_ref), "--csv", str(tmp_path / "wrong.csv"))
    assert wrong.returncode == 0, wrong.stderr
    assert read_csv(tmp_path / "wrong.csv") != acdc_rows


def test_values_outside_the_numbering_are_a_case_error(tmp_path: Path) -> None:
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    write(ref, "good", heart(), {0: 0, 1: 4, 2: 2, 3: 1})
    write(pred, "good", heart(1), {0: 0, 1: 4, 2: 2, 3: 1})
    write(ref, "bad", heart(), {0: 0, 1: 3, 2: 2, 3: 1})  # 3 is not in LV=1,MYO=2,RV=4
    write(pred, "bad", heart(1), {0: 0, 1: 4, 2: 2, 3: 1})
    result = run("evaluate", str(pred), str(ref), "--labels", "LV=1,MYO=2,RV=4", "--csv", str(tmp_path / "m.csv"))
    assert result.returncode == 1
    assert "bad: " in result.stderr and "values [3] outside the given labels" in result.stderr
    assert [r[0] for r in read_csv(tmp_path / "m.csv")] == ["good"] * 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["P", "R", "--pred", "P", "--ref", "R"], "not both"),
        (["P", "--ref", "R"], "not both"),
        ([], "PRED and REF missing"),
        (["P"], "REF missing"),
        (["--pred", "P"], "--ref missing"),
        (["P", "R", "--labels", "RV=1,MYO=2"], "LV missing"),
        (["P", "R", "--labels", "RV=1,MYO=1,LV=3"], "more than one structure"),
        (["P", "R", "--labels", "RV=1,MYO=2,LV=3,LV=4"], "LV is given more than once"),
        (["P", "R", "--labels", "RV=0,MYO=2,LV=3"], "positive integer"),
        (["P", "R", "--labels", "RV=1,MYO=2,XX=3"], "unknown structure 'XX'"),
        (["P", "R", "--labels", "RV:1,MYO=2,LV=3"], "not NAME=VALUE"),
    ],
)
def test_bad_folders_or_labels_are_one_line_exit_2(
    folders: tuple[Path, Path], args: list[str], message: str
) -> None:
    pred, ref = folders
    argv = [str(pred) if a == "P" else str(ref) if a == "R" else a for a in args]
    result = run("evaluate", *argv)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("labels", ["RV=1,MYO=2,LV=3", "LV=1,MYO=2,RV=3"])
def test_json_summary_matches_the_csv(folders: tuple[Path, Path], tmp_path: Path, labels: str) -> None:
    pred, ref = folders
    if labels != "RV=1,MYO=2,LV=3":
        for folder in (pred, ref):
            for path in sorted(folder.iterdir()):
                write(folder, path.name.removesuffix(".nii.gz"), np.asarray(nib.load(path).dataobj), SWAP)
    summary_path, csv_path = tmp_path / "out" / "summary.json", tmp_path / "m.csv"
    result = run("evaluate", "--pred", str(pred), "--ref", str(ref), "--labels", labels,
                 "--json", str(summary_path), "--csv", str(csv_path))
    assert result.returncode == 0, result.stderr
    text = summary_path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    summary = json.loads(text)
    assert list(summary) == ["foreground_mean", "mean", "metric_per_case"]  # sorted, as nnU-Net's
    value = {name: value for name, value in (item.split("=") for item in labels.split(","))}

    rows = read_csv(csv_path)
    cases = summary["metric_per_case"]
    assert [Path(c["prediction_file"]).name for c in cases] == ["case_a.nii.gz", "case_b.nii.gz", "case_c.nii.gz"]
    assert [Path(c["reference_file"]) for c in cases] == [ref / f"case_{x}.nii.gz" for x in "abc"]
    assert all(list(c["metrics"]) == ["1", "2", "3"] for c in cases)
    for row in rows:
        case = cases[ord(row[0][-1]) - ord("a")]
        metrics = case["metrics"][value[row[1]]]
        for column, text_value in zip(CSV_COLUMNS[2:], row[2:], strict=True):
            number = float(text_value)
            got = metrics[JSON_NAMES[column]]
            if math.isfinite(number):
                assert got == number, (row, column)  # full precision
            else:
                assert got is None, (row, column)
        assert metrics["n_pred"] == int(row[4]) + int(row[5])
        assert metrics["n_ref"] == int(row[4]) + int(row[6])
    assert cases[2]["metrics"][value["RV"]]["HD95_mm"] is None  # RV missing from case_c's prediction

    for structure, label in value.items():
        mean = summary["mean"][label]
        per_case = [c["metrics"][label] for c in cases]
        for name in ("Dice", "TP", "n_ref", "vol_ref_ml"):
            assert mean[name] == pytest.approx(sum(m[name] for m in per_case) / 3, rel=1e-12), (structure, name)
        finite = [m["HD95_mm"] for m in per_case if m["HD95_mm"] is not None]
        assert mean["HD95_mm"] == pytest.approx(sum(finite) / len(finite), rel=1e-12)
    assert summary["foreground_mean"]["Dice"] == pytest.approx(
        sum(summary["mean"][k]["Dice"] for k in ("1", "2", "3")) / 3, rel=1e-12
    )
