"""``heartseg demo``: the main job on a phantom cohort (and ACDC's validation patients when present).

The demo uses the embedded mode: a SQLite record and kombu's filesystem broker in the demo
folder, and real Celery worker processes started by the command (see ``heartseg run``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from db.queries import lv_ef_pairs
from heartseg.phantom import write_cohort
from heartseg.settings import Settings


@dataclass(frozen=True)
class DemoCohort:
    """One run of the demo."""

    run: str
    folder: Path


def demo_cohorts(settings: Settings, out: Path, n_phantoms: int, seed: int) -> list[DemoCohort]:
    """Phantoms written now, and (as links) the ACDC validation patients when the shared data is present."""
    from workers.training.split import VALIDATION_PATIENTS

    phantoms = out / "phantoms"
    shutil.rmtree(phantoms, ignore_errors=True)
    write_cohort(phantoms, n_phantoms, seed)
    cohorts = [DemoCohort("demo-phantoms", phantoms)]
    acdc = settings.acdc_training_dir
    if acdc.is_dir():
        linked = out / "acdc-validation"
        shutil.rmtree(linked, ignore_errors=True)
        linked.mkdir()
        for patient in VALIDATION_PATIENTS:
            if (acdc / patient).is_dir():
                (linked / patient).symlink_to((acdc / patient).resolve(), target_is_directory=True)
        cohorts.append(DemoCohort("demo-acdc-validation", linked))
    return cohorts


def demo_settings(settings: Settings, out: Path, use_mirroring: bool) -> Settings:
    """The embedded-mode settings of the demo: everything inside ``out``, no server (whatever the environment says)."""
    from scheduler.local_run import run_folder_settings

    return run_folder_settings(settings, out).model_copy(update={"use_mirroring": use_mirroring})


def demo_reports(engine: Engine, settings: Settings, out: Path, runs: list[str]) -> list[Path]:
    """The report page (and JSON summary) of each run: ``out/report/<run>/index.html``, ``summary.json``."""
    from heartseg.paths import key_part
    from scheduler.report_page import write_report

    pages = []
    for run in runs:
        folder = out / "report" / key_part(run)
        write_report(engine, settings, run, html=folder, json_path=folder / "summary.json")
        pages.append(folder / "index.html")
    return pages


def phantom_ef_rows(engine: Engine, run: str) -> list[dict[str, object]]:
    """LV EF of each phantom from predicted masks, reference masks and the analytic truth."""
    rows = lv_ef_pairs(engine, run)
    for row in rows:
        truth = json.loads((Path(str(row.pop("source_uri"))) / "Truth.json").read_text())
        row["truth_ef"] = truth["lv_ef_pct"]
        row["pred_minus_truth"] = float(row["pred_ef"]) - truth["lv_ef_pct"]
    return rows
