"""``heartseg export RUN --wide FILE``: one row per study, checked cell by cell against the long exports, the
``studies`` rows and view ``run_qc``, on PostgreSQL and on SQLite.

The cohort is test_report_page's: three phantoms segmented by an oracle (phantom002 shifted, so that Dice and
the indices differ from the reference; phantom003 without its RV at ES, which the QC flags) and phantom004,
whose image is corrupt (failed: no indices, no Dice, an error). The oracle's predicted Dice (``frame_quality``)
is 0.95 times the actual Dice.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from db import queries
from tests.test_report_page import PREDICTED_FACTOR, RUN, cohort, run_cohort  # noqa: F401 - the fixture

INDICES = ("lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef_pct", "rv_edv_ml", "rv_esv_ml", "rv_sv_ml", "rv_ef_pct",
           "myo_mass_g")
EXPECTED_COLUMNS = [
    "study", "group", "status", "ed_frame", "es_frame",
    *(f"{name}_{source}" for name in INDICES for source in ("pred", "ref")),
    "dice_RV_ED", "dice_RV_ES", "dice_MYO_ED", "dice_MYO_ES", "dice_LV_ED", "dice_LV_ES",
    "predicted_dice_RV_ED", "predicted_dice_RV_ES", "predicted_dice_MYO_ED", "predicted_dice_MYO_ES",
    "predicted_dice_LV_ED", "predicted_dice_LV_ES",
    "n_flags", "severity", "flags", "error",
]


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def _same(cell: str, value: object) -> bool:
    """A CSV cell against a value from the record: empty for NULL, floats to 1e-9."""
    if value is None:
        return cell == ""
    if isinstance(value, float):
        return float(cell) == pytest.approx(value, rel=1e-9, abs=1e-12)
    return cell == str(value)


def test_wide_export_agrees_with_long_exports_and_views(record_url: str, cohort: list[Path],  # noqa: F811
                                                        tmp_path: Path) -> None:
    engine, settings = run_cohort(record_url, cohort, tmp_path)
    assert list(queries.WIDE_COLUMNS) == EXPECTED_COLUMNS

    # through the command, in a subprocess, as a user runs it
    env = {**os.environ, "HEARTSEG_DATABASE_URL": record_url, "HEARTSEG_RESULTS_URI": settings.results_uri,
           "HEARTSEG_CACHE_DIR": str(settings.cache_dir)}
    wide_csv, metrics_csv, indices_csv = tmp_path / "out" / "wide.csv", tmp_path / "m.csv", tmp_path / "i.csv"
    result = subprocess.run([sys.executable, "-m", "scheduler.cli", "export", RUN, "--wide", str(wide_csv)],
                            capture_output=True, text=True, timeout=300, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert f"wrote 4 study rows to {wide_csv}" in result.stdout
    columns, rows = _read(wide_csv)
    assert columns == EXPECTED_COLUMNS

    # the long exports, the studies and run_qc, keyed by study
    queries.export_run(engine, RUN, metrics_csv, indices_csv)
    _, metrics = _read(metrics_csv)
    _, indices = _read(indices_csv)
    studies = {r["patient_id"]: r for r in queries.fetch(
        engine, "SELECT s.patient_id, s.pathology_group, s.status, s.ed_frame, s.es_frame, s.error "
                "FROM studies s JOIN runs r ON r.id = s.run_id WHERE r.name = :run", run=RUN)}
    qc = {r["patient_id"]: r for r in queries.run_qc(engine, RUN)}
    predicted = {(r["patient_id"], r["structure"], r["phase"]): r["predicted_dice"] for r in queries.fetch(
        engine, "SELECT s.patient_id, q.structure, q.phase, q.predicted_dice FROM frame_quality q "
                "JOIN studies s ON s.id = q.study_id JOIN runs r ON r.id = s.run_id WHERE r.name = :run", run=RUN)}
    assert len(predicted) == 3 * 3 * 2  # the done studies, three structures, ED and ES

    assert [r["study"] for r in rows] == ["phantom001", "phantom002", "phantom003", "phantom004"]
    for row in rows:
        patient = row["study"]
        study = studies[patient]
        assert row["group"] == _cell(study["pathology_group"]) and row["status"] == study["status"]
        assert row["ed_frame"] == _cell(study["ed_frame"]) and row["es_frame"] == _cell(study["es_frame"])
        assert row["error"] == _cell(study["error"])
        for key in ("n_flags", "severity", "flags"):
            assert row[key] == _cell(qc[patient][key]), (patient, key)
        by_source = {r["source"]: r for r in indices if r["study"] == patient}
        for name in INDICES:
            for source in ("pred", "ref"):
                want = by_source[source][name] if source in by_source else ""
                assert row[f"{name}_{source}"] == want, (patient, name, source)
        dice = {(r["structure"], r["phase"]): r["dice"] for r in metrics if r["study"] == patient
                and r["phase"] in ("ED", "ES")}
        for structure in ("RV", "MYO", "LV"):
            for phase in ("ED", "ES"):
                assert row[f"dice_{structure}_{phase}"] == dice.get((structure, phase), ""), (patient, structure)
                assert _same(row[f"predicted_dice_{structure}_{phase}"], predicted.get((patient, structure, phase))), \
                    (patient, structure, phase)

    # what the cohort makes of it: the failed study is empty but for its error, the others are full
    by_patient = {r["study"]: r for r in rows}
    failed = by_patient["phantom004"]
    assert failed["status"] == "failed" and "corrupt or truncated" in failed["error"]
    assert all(failed[c] == "" for c in EXPECTED_COLUMNS
               if c.endswith(("_pred", "_ref")) or c.startswith(("dice_", "predicted_dice_")))
    assert failed["n_flags"] == "0" and failed["flags"] == ""
    for patient in ("phantom001", "phantom002", "phantom003"):
        done = by_patient[patient]
        assert done["status"] == "done" and done["error"] == ""
        assert all(done[f"{name}_{source}"] != "" for name in INDICES for source in ("pred", "ref"))
    assert float(by_patient["phantom001"]["dice_LV_ED"]) == pytest.approx(1.0)
    assert float(by_patient["phantom001"]["predicted_dice_LV_ED"]) == pytest.approx(PREDICTED_FACTOR)
    assert float(by_patient["phantom002"]["predicted_dice_LV_ED"]) \
        == pytest.approx(PREDICTED_FACTOR * float(by_patient["phantom002"]["dice_LV_ED"]))
    assert float(by_patient["phantom003"]["predicted_dice_RV_ES"]) == 0.0  # no RV predicted at ES
    assert float(by_patient["phantom002"]["dice_LV_ED"]) < 1.0
    # a shift keeps the volumes; the RV missing at ES does not
    assert by_patient["phantom002"]["lv_edv_ml_pred"] == by_patient["phantom002"]["lv_edv_ml_ref"]
    assert by_patient["phantom003"]["rv_esv_ml_pred"] != by_patient["phantom003"]["rv_esv_ml_ref"]
    assert int(by_patient["phantom003"]["n_flags"]) > 0 and int(by_patient["phantom003"]["severity"]) >= 2
    assert by_patient["phantom003"]["dice_RV_ES"] in ("", "0.0")  # no RV predicted at ES

    # the function gives the same values as the command wrote (None as the empty cell)
    in_python = queries.run_wide_rows(engine, RUN)
    assert len(in_python) == len(rows)
    assert all(_same(row[c], r[c]) for r, row in zip(in_python, rows, strict=True) for c in EXPECTED_COLUMNS)

    # an unknown run: one line, exit 2, no file
    unknown = subprocess.run([sys.executable, "-m", "scheduler.cli", "export", "nope", "--wide",
                              str(tmp_path / "x.csv")], capture_output=True, text=True, timeout=300, env=env,
                             check=False)
    assert unknown.returncode == 2 and "no run named 'nope'" in unknown.stderr
    assert not (tmp_path / "x.csv").exists()
    engine.dispose()
