"""``heartseg demo``: the main job, in one process, on a phantom cohort (and ACDC's validation patients).

Records runs and studies, segments and evaluates every study through the same stage
functions the Celery workers run (:mod:`workers.pipeline`), and reports from the record's
views. The distributed form (Redis, Celery workers) replaces the loop here once it lands.
Only :func:`run_demo` imports the model code (torch).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from db.queries import fetch
from heartseg.phantom import write_cohort
from heartseg.settings import Settings


@dataclass(frozen=True)
class DemoCohort:
    """One run of the demo."""

    run: str
    folders: list[Path]


def demo_cohorts(settings: Settings, out: Path, n_phantoms: int, seed: int) -> list[DemoCohort]:
    """Phantoms written now, and the ACDC validation patients when the shared data is present."""
    from workers.training.split import VALIDATION_PATIENTS

    phantoms = out / "phantoms"
    shutil.rmtree(phantoms, ignore_errors=True)
    write_cohort(phantoms, n_phantoms, seed)
    cohorts = [DemoCohort("demo-phantoms", sorted(p for p in phantoms.iterdir() if p.is_dir()))]
    acdc = settings.acdc_training_dir
    if acdc.is_dir():
        cohorts.append(DemoCohort("demo-acdc-validation", [acdc / p for p in VALIDATION_PATIENTS
                                                           if (acdc / p).is_dir()]))
    return cohorts


def run_demo(engine: Engine, settings: Settings, cohorts: list[DemoCohort], out: Path,
             use_mirroring: bool, on_study: Callable[[str], None] | None = None) -> str:
    """Submit each cohort as a run and process every study in this process; returns the model fingerprint."""
    from heartseg.storage import LocalStore
    from scheduler.submit import submit_sources
    from workers.inference.predictor import Segmenter
    from workers.pipeline import ModelInfo, evaluate_stage, segment_stage

    settings = settings.model_copy(update={"use_mirroring": use_mirroring})
    segmenter = Segmenter.from_settings(settings)
    model = ModelInfo(segmenter.fingerprint, segmenter.segment)
    store = LocalStore(out / "results")
    for cohort in cohorts:
        submission = submit_sources(engine, settings, name=cohort.run, source_uri=str(cohort.folders[0].parent),
                                    sources=[str(f) for f in cohort.folders], model_dir=settings.model_dir,
                                    force=True)
        for study_id in submission.study_ids:
            if segment_stage(engine, study_id, model, store, worker="demo", lease_s=600):
                evaluate_stage(engine, study_id, store)
            if on_study is not None:
                on_study(cohort.run)
    return segmenter.fingerprint


def phantom_ef_rows(engine: Engine, run: str) -> list[dict[str, object]]:
    """LV EF of each phantom from predicted masks, reference masks and the analytic truth."""
    rows = fetch(engine, """
        SELECT s.patient_id AS patient, s.source_uri, p.lv_ef_pct AS pred_ef, f.lv_ef_pct AS ref_ef
        FROM studies s JOIN runs r ON r.id = s.run_id
        JOIN cardiac_indices p ON p.study_id = s.id AND p.source = 'pred'
        JOIN cardiac_indices f ON f.study_id = s.id AND f.source = 'ref'
        WHERE r.name = :run ORDER BY s.patient_id""", run=run)
    for row in rows:
        truth = json.loads((Path(str(row.pop("source_uri"))) / "Truth.json").read_text())
        row["truth_ef"] = truth["lv_ef_pct"]
        row["pred_minus_truth"] = float(row["pred_ef"]) - truth["lv_ef_pct"]  # type: ignore[arg-type]
    return rows
