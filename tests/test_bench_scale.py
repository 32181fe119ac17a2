"""The record at cohort scale: ``python -m bench.scale`` on a small cohort (PostgreSQL, Redis db 15), whose JSON
has every step and whose steps return the rows the cohort's plan says they must (the times are not checked); and a
submit of more studies than a PostgreSQL statement takes parameters."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.scale import fake_model, pilot_size, plan_cohort
from db.session import open_record
from heartseg.enums import StudyStatus
from heartseg.settings import Settings
from scheduler.submit import submit_sources
from tests.conftest import POSTGRES_ADMIN_URL

ROOT = Path(__file__).resolve().parents[1]
STUDIES = 200
STEPS = ("submit", "reconcile", "status", "report", "report_json", "export_wide", "view_cohort_metric_stats",
         "view_run_index_agreement", "view_run_status_counts", "view_run_failures", "view_run_dice_comparison",
         "view_run_qc")


def test_bench_scale_json_and_rows(tmp_path: Path) -> None:
    """A fresh cohort, kept; then its steps timed again on the kept database (``--reuse``), without the indexes of
    revision 0009: the same rows."""
    out = tmp_path / "scale.json"
    run = subprocess.run([sys.executable, "-m", "bench.scale", "--studies", str(STUDIES), "--json", str(out),
                          "--batch", "50", "--processes", "2", "--postgres", POSTGRES_ADMIN_URL, "--keep"],
                         cwd=ROOT, check=True, timeout=600, capture_output=True, text=True)
    kept = re.search(r"kept the database: (\S+)", run.stdout)
    assert kept is not None, run.stdout
    name = make_url(kept.group(1)).database
    assert name is not None and name.startswith("heartseg_scale_")
    try:
        check_result(json.loads(out.read_text()), indexes_dropped=0)
        assert isinstance(json.loads(out.read_text())["record_cohort_s"], float)
        again = tmp_path / "again.json"
        subprocess.run([sys.executable, "-m", "bench.scale", "--studies", str(STUDIES), "--json", str(again),
                        "--postgres", POSTGRES_ADMIN_URL, "--reuse", name, "--without-indexes"],
                       cwd=ROOT, check=True, timeout=600, capture_output=True)
        result = json.loads(again.read_text())
        check_result(result, indexes_dropped=2)
        assert result["record_cohort_s"] is None
    finally:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def check_result(result: dict[str, Any], indexes_dropped: int) -> None:
    """Every step in the JSON, with the rows the cohort's plan says."""

    assert set(result) == {"studies", "indexes_dropped", "record_cohort_s", *(f"{s}_s" for s in STEPS),
                           *(f"{s}_rows" for s in STEPS)}
    assert result["studies"] == STUDIES
    assert result["indexes_dropped"] == indexes_dropped
    assert all(isinstance(result[f"{s}_s"], float) and result[f"{s}_s"] > 0 for s in STEPS)

    plan = plan_cohort(STUDIES)
    expired = sum(f.expired for f in plan)
    statuses = {StudyStatus.QUEUED if f.expired else f.status for f in plan}  # the reconciler re-queued those
    input_failures = sum(f.failure == "input" for f in plan)  # each error names its own file
    tries_failures = sum(f.failure == "tries" for f in plan)  # one error shared
    with_reference = [f for f in plan if f.reference]
    groups = {f.group for f in with_reference}
    pilot_pairs = sum(f.reference for f in plan[:pilot_size(STUDIES)])
    # The small cohort still has every kind of study the checks below count.
    assert expired and input_failures and tries_failures and pilot_pairs and len(statuses) == 5

    failures = input_failures + 1
    metric_stats = len(groups) * 3 * 2  # groups x structures x (Dice, HD95)
    assert {s: result[f"{s}_rows"] for s in STEPS} == {
        "submit": STUDIES,  # the fresh run's studies, all enqueued
        "reconcile": expired,
        "status": STUDIES,
        "report": len(statuses) + metric_stats + 9 + failures,
        "report_json": STUDIES,
        "export_wide": STUDIES,
        "view_cohort_metric_stats": metric_stats,
        "view_run_index_agreement": 9,
        "view_run_status_counts": len(statuses),
        "view_run_failures": failures,
        "view_run_dice_comparison": pilot_pairs * 2 * 3,  # studies done by both runs x (ED, ES) x structures
        "view_run_qc": STUDIES,
    }


def test_submit_takes_more_studies_than_a_statement_takes_parameters(postgres_url: str, tmp_path: Path) -> None:
    """PostgreSQL takes at most 65,535 parameters per statement: a cohort of 70,000 is recorded, and submitted
    again with --force, without an ``IN`` list of its ids."""
    model = fake_model(tmp_path / "models" / "m", b"weights")
    settings = Settings(database_url=postgres_url, trusted_model_roots=[tmp_path / "models"])
    engine = open_record(postgres_url)
    sources = [f"/data/cohort/p{i:06d}" for i in range(70_000)]
    first = submit_sources(engine, settings, name="big", source_uri="/data/cohort", sources=sources, model_dir=model)
    again = submit_sources(engine, settings, name="big", source_uri="/data/cohort", sources=sources, model_dir=model,
                           force=True)
    engine.dispose()
    assert len(first.study_ids) == len(set(first.study_ids)) == 70_000
    assert again.study_ids == first.study_ids  # all still queued: sent again, none in progress or failed
    assert (again.in_progress, again.failed) == (0, 0)
