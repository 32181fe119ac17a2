"""heartseg db upgrade / report / export against a real record."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from db.queries import INDICES_COLUMNS, METRICS_COLUMNS
from db.session import open_record
from tests.record_fixtures import new_run, write_results


def heartseg(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HEARTSEG_DATABASE_URL": url, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_upgrade_report_export(record_url: str, tmp_path: Path) -> None:
    result = heartseg(record_url, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    engine = open_record(record_url)
    model_id, studies = new_run(engine, "cohort-1", sources=["/d/patient001", "/d/patient002"], groups=["NOR", "DCM"])
    for study_id in studies.values():
        write_results(engine, study_id, model_id)
    engine.dispose()

    report = heartseg(record_url, "report", "cohort-1")
    assert report.returncode == 0, report.stderr
    for heading in ("studies by status", "Dice and HD95", "Bland-Altman", "failure reasons"):
        assert heading in report.stdout
    assert "lv_ef_pct" in report.stdout

    metrics, indices = tmp_path / "m.csv", tmp_path / "i.csv"
    exported = heartseg(record_url, "export", "cohort-1", "--metrics", str(metrics), "--indices", str(indices))
    assert exported.returncode == 0, exported.stderr
    with metrics.open() as handle:
        metric_rows = list(csv.DictReader(handle))
    with indices.open() as handle:
        index_rows = list(csv.DictReader(handle))
    assert tuple(metric_rows[0]) == METRICS_COLUMNS
    assert tuple(index_rows[0]) == INDICES_COLUMNS
    assert len(metric_rows) == 2 * 2 * 3 and len(index_rows) == 2 * 2
    first = metric_rows[0]
    assert (first["study"], first["phase"], first["frame"], first["structure"]) == ("/d/patient001", "ED", "1", "RV")
    assert float(first["dice"]) == pytest.approx(0.8)
    assert {(r["study"], r["group"], r["source"]) for r in index_rows} >= {("/d/patient002", "DCM", "pred")}

    missing = heartseg(record_url, "report", "nope")
    assert missing.returncode == 2
    assert "no run named 'nope'" in missing.stderr and "cohort-1" in missing.stderr


def test_a_server_record_is_migrated_only_by_db_upgrade(postgres_url: str) -> None:
    from db.migrate import head_revision, record_revision, upgrade
    from db.session import make_engine

    engine = make_engine(postgres_url)
    upgrade(engine, "0006")  # a record made by an older HeartSeg
    behind = heartseg(postgres_url, "status", "any-run")
    assert behind.returncode == 2
    assert behind.stderr.strip().splitlines()[-1] == (
        f"error: the record at {engine.url.render_as_string(hide_password=True)} is at revision 0006 and this "
        f"HeartSeg needs {head_revision()}: back it up and run `heartseg db upgrade`")
    assert record_revision(engine) == "0006"  # the command changed nothing
    upgraded = heartseg(postgres_url, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip().endswith(f": from 0006 to {head_revision()}")
    assert heartseg(postgres_url, "db", "upgrade").stdout.strip().endswith(f": already at {head_revision()}")
    unknown = heartseg(postgres_url, "status", "any-run")
    assert unknown.stderr == "error: no run named 'any-run' in the record; runs: none\n"  # past the check
    engine.dispose()


def test_an_empty_server_database_gets_the_schema_on_first_open(postgres_url: str) -> None:
    from db.migrate import head_revision, record_revision

    engine = open_record(postgres_url)
    assert record_revision(engine) == head_revision()
    engine.dispose()
