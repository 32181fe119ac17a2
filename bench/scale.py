"""Benchmark: the record at cohort scale, ``python -m bench.scale --studies N [--json FILE]``.

Length: one script on purpose: a benchmark is one file people run, its plan, recording and timed steps in order.

On a scratch PostgreSQL database (dropped after), a generated cohort of N studies is recorded through the
project's own writers: ``scheduler.submit.submit_sources`` records the run, then each study goes through
what the workers record (``db.lifecycle``'s claims and transitions, ``db.writes``' ``record_mask``,
``record_frame_quality``, ``record_metrics``, ``record_indices``, ``record_qc_flags``), many studies per
transaction. The values are random but plausible, and the mix is a run in progress: most studies done (some
with reference labels, so metrics and reference indices, some without), some failed (bad input naming a
file, or out of tries), some queued, running (a few with an expired lease) or segmented; a few QC flags per
done study; a pilot run of another model on the first 1% of the cohort (for ``run_dice_comparison``).

Then it times each step as the CLI or worker code runs it (the same functions, from opening the record):
``submit`` (a separate, fresh run of N new studies: recorded, and enqueued on Redis db 15, flushed before and
after), one reconciler pass (``heartseg reconcile``), ``status`` (what ``heartseg status RUN`` computes and
prints, its reconciler pass included), ``report`` (the text tables), ``report --json``, ``export --wide`` and
``SELECT * FROM <view> WHERE run = RUN`` of each cohort view. Each step's rows are checked against the plan
of the cohort; a mismatch stops the benchmark.

``--without-indexes`` drops the indexes of revision 0009 after the schema is made (the record as it was
before them; the views stay as 0009 made them), so that both sides can be measured with one HeartSeg.

``--keep`` keeps the scratch database (its name is printed); ``--reuse NAME`` times the steps again on such a
kept database of the same ``--studies`` and ``--seed``, without recording the cohort (an hour at 100,000 on two
cores): it brings the schema to this HeartSeg's head, puts the indexes of 0009 back (or drops them with
``--without-indexes``) and undoes what the steps changed: the submitted run is deleted, the studies whose
lease the reconciler found expired are running with an expired lease again, and the queued and segmented
studies' messages count as just sent (as in a freshly recorded cohort, where the reconciler's stall rule does
not apply). The database is kept; its ``record_cohort_s`` is null.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from db.lifecycle import (
    claim_study,
    mark_done,
    mark_failed,
    mark_segmented,
    record_failed_try,
    record_patient,
    record_segmentation,
)
from db.queries import export_run, export_wide, run_report
from db.schema import Study
from db.session import make_engine, open_record, session_scope
from db.writes import record_frame_quality, record_indices, record_mask, record_metrics, record_qc_flags
from heartseg.enums import IndexSource, PhaseSource, StudyStatus
from heartseg.labels import Phase, Structure
from heartseg.settings import Settings
from scheduler.progress import follow_run
from scheduler.report_page import write_report
from scheduler.reports import record_tables
from scheduler.submit import submit_sources
from workers.celery_app import CPU_QUEUE, GPU_QUEUE, create_app
from workers.enqueue import enqueue_segmentation
from workers.reconciler import reconcile_once

BROKER = "redis://127.0.0.1:6379/15"
RUN = "scale"
PILOT_RUN = "scale-pilot"
SUBMIT_RUN = "scale-submit"
VIEWS = ("cohort_metric_stats", "run_index_agreement", "run_status_counts", "run_failures", "run_dice_comparison",
         "run_qc")
#: The steps timed, in order; the JSON has ``<step>_s`` and ``<step>_rows`` for each.
STEPS = ("submit", "reconcile", "status", "report", "report_json", "export_wide", *(f"view_{v}" for v in VIEWS))

#: Where the studies of the cohort end (shares of N).
STATUS_MIX = ((StudyStatus.DONE, 0.85), (StudyStatus.FAILED, 0.04), (StudyStatus.QUEUED, 0.06),
              (StudyStatus.RUNNING, 0.03), (StudyStatus.SEGMENTED, 0.02))
REFERENCE_SHARE = 0.7
"""Done studies with reference labels (metrics and reference indices)."""
EXPIRED_SHARE = 0.2
"""Running studies whose worker died (lease expired): the reconciler's work."""
GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV", None)
FLAG_COUNTS = (0, 0, 0, 1, 1, 1, 2, 2, 3, 4)
"""QC flags of a done study, drawn uniformly (1.4 on average)."""
MAX_ATTEMPTS = 3
LEASE_S = 300.0
RUNNING_LEASE_S = 7 * 24 * 3600.0
"""The lease of a running study whose worker is alive (it would renew it while the benchmark runs)."""
WORKERS = tuple(f"gpu{i}@node{j}" for i in range(4) for j in range(3))
TRIES_ERROR = "RuntimeError: CUDA error: an illegal memory access was encountered"


@dataclass(frozen=True)
class Fate:
    """What happens to one study of the cohort."""

    status: StudyStatus
    """The status it is left in by the generator (before the reconciler's pass)."""
    reference: bool
    flags: int
    group: str | None
    ed: int
    es: int
    failure: str | None = None
    """``input`` (bad input, the error names the file) or ``tries`` (out of tries), for a failed study."""
    expired: bool = False
    rv_missing_es: bool = False
    """The RV is missing from the ES mask (Dice 0, no distance)."""


def plan_cohort(studies: int, seed: int = 0) -> list[Fate]:
    """The fates of a cohort of ``studies`` studies, the same for the same seed."""
    rng = random.Random(seed)
    statuses = [s for s, _ in STATUS_MIX]
    weights = [w for _, w in STATUS_MIX]
    plan = []
    for _ in range(studies):
        status = rng.choices(statuses, weights)[0]
        plan.append(Fate(
            status=status, reference=status is StudyStatus.DONE and rng.random() < REFERENCE_SHARE,
            flags=rng.choice(FLAG_COUNTS) if status is StudyStatus.DONE else 0, group=rng.choice(GROUPS),
            ed=1, es=rng.randint(8, 15),
            failure=rng.choice(("input", "tries")) if status is StudyStatus.FAILED else None,
            expired=status is StudyStatus.RUNNING and rng.random() < EXPIRED_SHARE,
            rv_missing_es=rng.random() < 0.01))
    return plan


def pilot_size(studies: int) -> int:
    """Studies of the pilot run (the first of the cohort): 1%, at least 10."""
    return max(min(studies, 10), studies // 100)


def source_of(i: int, cohort: str = "cohort") -> str:
    return f"/data/{cohort}/patient{i:06d}"


def expected_rows(plan: Sequence[Fate]) -> dict[str, int]:
    """What each step returns for the cohort ``plan`` (after the reconciler re-queued the expired studies)."""
    n = len(plan)
    statuses = {StudyStatus.QUEUED if f.expired else f.status for f in plan}
    errors = sum(f.failure == "input" for f in plan) + any(f.failure == "tries" for f in plan)
    measured = [f for f in plan if f.reference]
    metric_stats = len({f.group for f in measured}) * 3 * 2  # groups x structures x (dice, hd95)
    agreement = 9 if measured else 0
    rows = {"submit": n, "reconcile": sum(f.expired for f in plan), "status": n,
            "report": len(statuses) + metric_stats + agreement + errors, "report_json": n, "export_wide": n,
            "view_cohort_metric_stats": metric_stats, "view_run_index_agreement": agreement,
            "view_run_status_counts": len(statuses), "view_run_failures": errors,
            "view_run_dice_comparison": 6 * sum(f.reference for f in plan[:pilot_size(n)]), "view_run_qc": n}
    return rows


# --- plausible values ---


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def metric_values(rng: random.Random, structure: Structure, phase: Phase, missing: bool) -> dict[str, float]:
    """One structure's metrics in one frame (``StructureMetrics.as_dict()``), consistent with each other."""
    voxel_ml = 1.4 * 1.4 * 10 / 1000
    ref_ml = {Structure.LV: 150.0, Structure.MYO: 120.0, Structure.RV: 160.0}[structure]
    ref_ml *= rng.uniform(0.35, 0.6) if phase is Phase.ES and structure is not Structure.MYO else rng.uniform(0.8, 1.2)
    n_ref = max(1, round(ref_ml / voxel_ml))
    if missing:
        return {"dice": 0.0, "iou": 0.0, "tp": 0, "fp": 0, "fn": n_ref, "hd95_mm": math.inf, "assd_mm": math.inf,
                "vol_pred_ml": 0.0, "vol_ref_ml": n_ref * voxel_ml}
    quality = {Structure.LV: 0.95, Structure.MYO: 0.89, Structure.RV: 0.9}[structure] - (0.04 if phase is Phase.ES
                                                                                        else 0.0)
    recall, precision = (_clip(rng.gauss(quality, 0.04), 0.3, 1.0) for _ in range(2))
    tp = round(n_ref * recall)
    fn = n_ref - tp
    fp = round(tp * (1 / precision - 1))
    return {"dice": 2 * tp / (2 * tp + fp + fn), "iou": tp / (tp + fp + fn), "tp": tp, "fp": fp, "fn": fn,
            "hd95_mm": rng.uniform(2.0, 15.0), "assd_mm": rng.uniform(0.5, 3.0), "vol_pred_ml": (tp + fp) * voxel_ml,
            "vol_ref_ml": n_ref * voxel_ml}


def index_values(rng: random.Random, fate: Fate, body: tuple[float, float] | None,
                 like: dict[str, Any] | None = None) -> dict[str, Any]:
    """Cardiac indices (``CardiacIndices.as_dict()``); ``like``: those of the other masks, to differ a little."""
    def value(name: str, mean: float, sd: float) -> float:
        return max(5.0, like[name] + rng.gauss(0, sd / 4) if like else rng.gauss(mean, sd))

    lv_edv, rv_edv = value("lv_edv_ml", 150, 35), value("rv_edv_ml", 160, 40)
    lv_esv = lv_edv * _clip(rng.gauss(0.42, 0.12), 0.1, 0.95)
    rv_esv = rv_edv * _clip(rng.gauss(0.48, 0.1), 0.1, 0.95)
    mass = value("myo_mass_g", 120, 30)
    out: dict[str, Any] = {
        "ed_frame": fate.ed, "es_frame": fate.es, "phase_source": PhaseSource.STATED,
        "lv_edv_ml": lv_edv, "lv_esv_ml": lv_esv, "lv_sv_ml": lv_edv - lv_esv, "lv_ef_pct": 100 * (1 - lv_esv / lv_edv),
        "rv_edv_ml": rv_edv, "rv_esv_ml": rv_esv, "rv_sv_ml": rv_edv - rv_esv, "rv_ef_pct": 100 * (1 - rv_esv / rv_edv),
        "myo_mass_g": mass, "bsa_m2": None, "lv_edv_index_ml_m2": None, "lv_esv_index_ml_m2": None,
        "rv_edv_index_ml_m2": None, "rv_esv_index_ml_m2": None, "myo_mass_index_g_m2": None,
        "lv_cardiac_output_l_min": None,
    }
    if body is not None:
        bsa = math.sqrt(body[0] * body[1] / 3600)
        out.update(bsa_m2=bsa, lv_edv_index_ml_m2=lv_edv / bsa, lv_esv_index_ml_m2=lv_esv / bsa,
                   rv_edv_index_ml_m2=rv_edv / bsa, rv_esv_index_ml_m2=rv_esv / bsa, myo_mass_index_g_m2=mass / bsa)
    return out


def quality_values(rng: random.Random) -> list[dict[str, object]]:
    """``frame_quality`` rows of one frame (one fold: no fold agreement)."""
    return [{"structure": s, "predicted_dice": _clip(rng.gauss(0.88, 0.06), 0, 1),
             "self_dice": _clip(rng.gauss(0.93, 0.03), 0, 1), "entropy": _clip(rng.gauss(0.05, 0.02), 0, 1),
             "fold_agreement": None, "n_folds": 1, "volume_ml": rng.uniform(40, 200)} for s in Structure]


FLAG_TEMPLATES = (
    ("uncertain", 2, None, 0.1, 1, "uncertain segmentation: mean normalised entropy {v:.3f} over the heart "
                                   "(above 0.1)"),
    ("low_predicted_dice", 2, Structure.RV, 0.8, 1, "{p} RV: predicted Dice {v:.2f} (below 0.8)"),
    ("pieces", 2, Structure.MYO, 5.0, 1, "MYO in 2 pieces, {v:.1f} ml outside the largest (over 5 ml)"),
    ("edge_slice", 2, None, 0.5, 1, "labels on both end slices, {v:.0%} of the largest slice's area on the apex"),
    ("lv_not_enclosed", 2, Structure.LV, 0.8, 2, "LV cavity not enclosed by myocardium: {v:.0%} of its border "
                                                 "is myocardium (below 80%)"),
    ("implausible_index", None, None, 20.0, 2, "LVEF {v:.1f} % outside the plausible 20-80 %"),
)


def flag_rows(rng: random.Random, fate: Fate, count: int) -> list[dict[str, object]]:
    """``QcFlag.as_row()`` of ``count`` flags."""
    rows: list[dict[str, object]] = []
    for _ in range(count):
        name, frames, structure, threshold, severity, reason = rng.choice(FLAG_TEMPLATES)
        frame = (fate.ed, fate.es)[rng.randrange(2)] if frames else None
        value = threshold * rng.uniform(0.5, 0.95) if threshold < 1 and name != "uncertain" else threshold * 1.3
        where = "" if frame is None else f"frame {frame}: "
        rows.append({"flag": name, "frame": frame, "structure": structure, "value": value, "threshold": threshold,
                     "severity": severity, "reason": where + reason.format(v=value, p="ED" if frame == 1 else "ES")})
    return rows


# --- the cohort through the writers ---


class Recorder:
    """Records studies as the workers would, with plausible values drawn from ``rng``."""

    def __init__(self, model_id: int, seed: int) -> None:
        self.model_id = model_id
        self.rng = random.Random(seed)

    def segment(self, session: Session, study_id: int, name: str, fate: Fate, worker: str) -> None:
        """Claim, record the patient and the ED and ES masks with their quality, then ``segmented``."""
        rng = self.rng
        claim_study(session, study_id, worker, LEASE_S, max_attempts=MAX_ATTEMPTS)
        body = (rng.uniform(150, 195), rng.uniform(50, 110)) if rng.random() < 0.5 else None
        record_patient(session, study_id, patient_id=name, group=fate.group, height_cm=body and body[0],
                       weight_kg=body and body[1], n_frames=rng.randint(fate.es + 5, 30))
        for frame, phase in ((fate.ed, Phase.ED), (fate.es, Phase.ES)):
            record_mask(session, study_id=study_id, model_id=self.model_id, frame=frame, phase=phase,
                        uri=f"/results/{name}/{name}_frame{frame:02d}.nii.gz", sha256=f"{rng.getrandbits(256):064x}",
                        shape=(216, 256, 10), spacing=(1.4, 1.4, 10.0), uncertainty=_clip(rng.gauss(0.05, 0.03), 0, 1))
            record_frame_quality(session, study_id=study_id, model_id=self.model_id, frame=frame, phase=phase,
                                 structures=quality_values(rng))
        record_segmentation(session, study_id, ed=fate.ed, es=fate.es, phase_source=PhaseSource.STATED,
                            load_s=rng.uniform(1, 4), predict_s=rng.uniform(2, 10), write_s=rng.uniform(0.2, 1))
        mark_segmented(session, study_id, worker)

    def evaluate(self, session: Session, study_id: int, fate: Fate) -> None:
        """Metrics (with a reference), indices, QC flags, then ``done``."""
        rng, model_id = self.rng, self.model_id
        body = (rng.uniform(150, 195), rng.uniform(50, 110)) if rng.random() < 0.5 else None
        pred = index_values(rng, fate, body)
        if fate.reference:
            for frame, phase in ((fate.ed, Phase.ED), (fate.es, Phase.ES)):
                record_metrics(session, study_id=study_id, model_id=model_id, frame=frame, phase=phase, metrics={
                    s: metric_values(rng, s, phase, fate.rv_missing_es and s is Structure.RV and phase is Phase.ES)
                    for s in Structure})
        record_indices(session, study_id=study_id, model_id=model_id, source=IndexSource.PRED, indices=pred)
        if fate.reference:
            record_indices(session, study_id=study_id, model_id=model_id, source=IndexSource.REF,
                           indices=index_values(rng, fate, body, like=pred))
        record_qc_flags(session, study_id=study_id, model_id=model_id, flags=flag_rows(rng, fate, fate.flags))
        mark_done(session, study_id, metrics_s=rng.uniform(1, 5))

    def fail(self, session: Session, study_id: int, name: str, fate: Fate, worker: str) -> None:
        """Bad input (fails at once, naming the file), or an unexpected error on every try."""
        if fate.failure == "input":
            claim_study(session, study_id, worker, LEASE_S, max_attempts=MAX_ATTEMPTS)
            mark_failed(session, study_id, f"/data/cohort/{name}/{name}_frame{fate.es:02d}.nii.gz: cannot read the "
                                           "file: corrupt or truncated (Compressed file ended before the "
                                           "end-of-stream marker was reached)", worker)
            return
        for _ in range(MAX_ATTEMPTS):
            claim_study(session, study_id, worker, LEASE_S, max_attempts=MAX_ATTEMPTS)
            record_failed_try(session, study_id, worker, TRIES_ERROR, MAX_ATTEMPTS)

    def study(self, session: Session, study_id: int, name: str, fate: Fate) -> None:
        """Take one study to its fate."""
        worker = self.rng.choice(WORKERS)
        if fate.status is StudyStatus.FAILED:
            self.fail(session, study_id, name, fate, worker)
        elif fate.status is StudyStatus.RUNNING:
            claim_study(session, study_id, worker, -60.0 if fate.expired else RUNNING_LEASE_S,
                        max_attempts=MAX_ATTEMPTS)
        elif fate.status in (StudyStatus.SEGMENTED, StudyStatus.DONE):
            self.segment(session, study_id, name, fate, worker)
            if fate.status is StudyStatus.DONE:
                self.evaluate(session, study_id, fate)


def fake_model(folder: Path, weights: bytes) -> Path:
    """A stand-in model folder: submit only fingerprints files (``weights`` makes the fingerprint)."""
    (folder / "fold_0").mkdir(parents=True)
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(weights)
    (folder / "plans.json").write_text("{}")
    (folder / "dataset.json").write_text("{}")
    return folder


def record_part(url: str, model_id: int, seed: int, studies: Sequence[tuple[int, str, Fate]]) -> int:
    """Take ``(study id, name, fate)`` of studies to their fates in one transaction (in a worker process, with
    its own engine); returns how many."""
    engine = _engines.get(url) or _engines.setdefault(url, make_engine(url))
    recorder = Recorder(model_id, seed)
    with session_scope(engine) as session:
        for study_id, name, fate in studies:
            recorder.study(session, study_id, name, fate)
    return len(studies)


_engines: dict[str, Engine] = {}
"""One engine per worker process (and database)."""


def _own_session() -> None:
    """A worker process starts its own session: on Linux with autogroup scheduling (where ``nice`` applies only
    within a session), each then gets a share of the CPUs of its own beside other sessions' jobs."""
    os.setsid()


def record_cohort(engine: Engine, settings: Settings, models: Path, plan: Sequence[Fate], *, batch: int, seed: int,
                  processes: int) -> None:
    """The cohort run (and its pilot run, by another model) through submit and the workers' writers, ``batch``
    studies per transaction, in ``processes`` processes."""
    pilot = [Fate(StudyStatus.DONE, True, 0, f.group, f.ed, f.es) for f in plan[:pilot_size(len(plan))]]
    jobs: list[tuple[str, int, int, list[tuple[int, str, Fate]]]] = []
    for run, model, fates in ((PILOT_RUN, models / "pilot", pilot), (RUN, models / "cohort", list(plan))):
        sources = [source_of(i) for i in range(len(fates))]
        submission = submit_sources(engine, settings, name=run, source_uri="/data/cohort", sources=sources,
                                    model_dir=model)
        with session_scope(engine) as session:
            ids = {uri: id_ for uri, id_ in session.execute(select(Study.source_uri, Study.id)
                                                            .where(Study.run_id == submission.run_id))}
        studies = [(ids[source], f"patient{i:06d}", fate) for i, (source, fate) in enumerate(zip(sources, fates,
                                                                                                   strict=True))]
        jobs += [(settings.database_url, submission.model_id, seed + len(jobs), studies[start:start + batch])
                 for start in range(0, len(studies), batch)]
    if processes == 1:
        for job in jobs:
            record_part(*job)
        return
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_own_session) as pool:
        recorded = sum(pool.map(record_part, *zip(*jobs, strict=True)))
    if recorded != len(plan) + len(pilot):
        raise RuntimeError(f"recorded {recorded} studies, expected {len(plan) + len(pilot)}")


# --- the steps, as the commands run them ---


def quiet_console() -> Console:
    """A console that prints what the command would, into memory."""
    return Console(file=io.StringIO(), width=160)


def step_submit(settings: Settings, models: Path, studies: int) -> int:
    """``heartseg submit`` of a fresh run (without discovery): record N new studies and enqueue them."""
    engine = open_record(settings.database_url)
    submission = submit_sources(engine, settings, name=SUBMIT_RUN, source_uri="/data/cohort-b",
                                sources=[source_of(i, "cohort-b") for i in range(studies)],
                                model_dir=models / "cohort")
    sent = enqueue_segmentation(create_app(settings), submission.study_ids)
    engine.dispose()
    return sent


def step_reconcile(settings: Settings) -> int:
    """``heartseg reconcile``: one pass over every run; returns the studies it changed."""
    engine = open_record(settings.database_url)
    result = reconcile_once(engine, settings, create_app(settings))
    quiet_console().print(f"re-queued {len(result.requeued)}, failed {len(result.failed)}, segment messages sent "
                          f"{len(result.segment)}, evaluation messages sent {len(result.evaluate)}")
    engine.dispose()
    return len(result.segment) + len(result.evaluate) + len(result.failed)


def step_status(settings: Settings) -> int:
    """``heartseg status RUN`` (once, not ``--wait``); returns the studies counted."""
    counts = follow_run(settings, RUN, wait=False, poll_s=2.0, console=quiet_console())
    quiet_console().print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return sum(counts.values())


def step_report(settings: Settings) -> int:
    """``heartseg report RUN``: the four tables; returns their rows."""
    engine = open_record(settings.database_url)
    report = run_report(engine, RUN)
    console = quiet_console()
    for table in record_tables(report, RUN):
        console.print(table)
    engine.dispose()
    return sum(len(rows) for rows in report.values())


def step_report_json(settings: Settings, out: Path) -> int:
    """``heartseg report RUN --json FILE``; returns the studies it counts."""
    engine = open_record(settings.database_url)
    for path in write_report(engine, settings, RUN, json_path=out):
        quiet_console().print(f"wrote {path}")
    engine.dispose()
    return int(json.loads(out.read_text())["counts"]["total"])


def step_export_wide(settings: Settings, out: Path) -> int:
    """``heartseg export RUN --wide FILE``; returns the study rows written."""
    engine = open_record(settings.database_url)
    export_run(engine, RUN, None, None)
    written = export_wide(engine, RUN, out)
    quiet_console().print(f"wrote {written} study rows to {out}")
    engine.dispose()
    return written


def step_view(settings: Settings, view: str) -> int:
    """``SELECT * FROM view WHERE run = RUN`` (``run_a`` for ``run_dice_comparison``); returns its rows."""
    engine = open_record(settings.database_url)
    column = "run_a" if view == "run_dice_comparison" else "run"
    with engine.connect() as connection:
        rows = connection.execute(text(f"SELECT * FROM {view} WHERE {column} = :run"), {"run": RUN}).all()
    engine.dispose()
    return len(rows)


# --- the benchmark ---


@contextmanager
def scratch_database(admin_url: str, keep: bool = False) -> Iterator[str]:
    """A new database on the server of ``admin_url``, dropped on exit unless ``keep``."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"heartseg_scale_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        if keep:
            print(f"kept the database: {url}")
        else:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _revision_0009() -> Any:
    """The module of revision 0009 (its ``INDEXES`` and ``REPLACED``)."""
    from alembic.script import ScriptDirectory

    from db.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision("0009")
    if script is None:
        raise RuntimeError("--without-indexes needs revision 0009 (db/migrations/versions/0009_cohort_indexes.py)")
    return script.module


def drop_cohort_indexes(engine: Engine) -> list[str]:
    """Put the indexes back as they were before revision 0009 (drop its ``INDEXES``, create the ``REPLACED``
    again, where not done yet); returns the names of the indexes dropped."""
    module = _revision_0009()
    with engine.begin() as connection:
        for name, table, columns in module.REPLACED:
            connection.execute(text(f'CREATE INDEX IF NOT EXISTS "{name}" ON {table} ({", ".join(columns)})'))
        for name, _, _ in module.INDEXES:
            connection.execute(text(f'DROP INDEX IF EXISTS "{name}"'))
    return [name for name, _, _ in module.INDEXES]


def restore_cohort_indexes(engine: Engine) -> None:
    """The indexes as revision 0009 makes them (after :func:`drop_cohort_indexes` on a reused database)."""
    module = _revision_0009()
    with engine.begin() as connection:
        for name, table, columns in module.INDEXES:
            connection.execute(text(f'CREATE INDEX IF NOT EXISTS "{name}" ON {table} ({", ".join(columns)})'))
        for name, _, _ in module.REPLACED:
            connection.execute(text(f'DROP INDEX IF EXISTS "{name}"'))


def reset_steps(engine: Engine, plan: Sequence[Fate]) -> None:
    """Undo what the steps changed in a kept database (see the module): the submitted run deleted, the studies
    of ``plan`` with an expired lease running again with one, the messages of queued and segmented studies
    just sent."""
    expired = [source_of(i) for i, fate in enumerate(plan) if fate.expired]
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM runs WHERE name = :run"), {"run": SUBMIT_RUN})  # studies cascade
        connection.execute(text(
            "UPDATE studies SET status = 'running', worker = :worker, error = NULL, "
            "lease_expires_at = now() - interval '60 seconds' "
            "WHERE run_id = (SELECT id FROM runs WHERE name = :run) AND source_uri = ANY(:sources)"),
            {"worker": WORKERS[0], "run": RUN, "sources": expired})
        connection.execute(text("UPDATE studies SET enqueued_at = now() WHERE status IN ('queued', 'segmented')"))


def analyze(url: str) -> None:
    """``VACUUM ANALYZE``: what autovacuum does soon after a bulk of writes, done now so that plans are stable."""
    engine = make_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def timed(step: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    rows = step()
    return time.perf_counter() - started, rows


def run_steps(settings: Settings, models: Path, studies: int, out: Path) -> tuple[dict[str, tuple[float, int]],
                                                                                list[str]]:
    """Time every step of :data:`STEPS`: ``{step: (seconds, rows)}`` and what was wrong. Redis db 15 is emptied
    before and after the steps that send messages, so that each finds the queues as a quiet cluster has them."""
    queue = redis.Redis.from_url(BROKER)
    results: dict[str, tuple[float, int]] = {}
    problems = []
    queue.flushdb()
    results["submit"] = timed(lambda: step_submit(settings, models, studies))
    queued = queue.llen(GPU_QUEUE)
    if queued != studies:
        problems.append(f"submit: expected {studies} messages on queue {GPU_QUEUE}, found {queued}")
    queue.flushdb()
    analyze(settings.database_url)  # the submitted run's rows, as autovacuum would
    results["reconcile"] = timed(lambda: step_reconcile(settings))
    queue.flushdb()
    results["status"] = timed(lambda: step_status(settings))
    results["report"] = timed(lambda: step_report(settings))
    results["report_json"] = timed(lambda: step_report_json(settings, out / "summary.json"))
    results["export_wide"] = timed(lambda: step_export_wide(settings, out / "wide.csv"))
    for view in VIEWS:
        results[f"view_{view}"] = timed(lambda view=view: step_view(settings, view))  # type: ignore[misc]
    left = {q: queue.llen(q) for q in (GPU_QUEUE, CPU_QUEUE)}
    queue.flushdb()
    if any(left.values()):
        problems.append(f"the steps after the reconciler's sent messages nobody expected: {left}")
    return results, problems


@contextmanager
def kept_database(admin_url: str, name: str) -> Iterator[str]:
    """The URL of database ``name`` (kept by ``--keep``) on the server of ``admin_url``; it stays."""
    yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def benchmark(admin_url: str, studies: int, *, batch: int = 500, seed: int = 0, processes: int = 1,
              without_indexes: bool = False, keep: bool = False,
              reuse: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """Record the cohort on a scratch database (or ``reuse`` a kept one) and time the steps; returns the flat
    result (see :func:`main`) and what differs from the cohort's plan (nothing, normally)."""
    plan = plan_cohort(studies, seed)
    database = kept_database(admin_url, reuse) if reuse else scratch_database(admin_url, keep)
    with database as url, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fake_model(root / "models" / "cohort", b"cohort weights")
        fake_model(root / "models" / "pilot", b"pilot weights")
        settings = Settings(database_url=url, broker_url=BROKER, trusted_model_roots=[root / "models"],
                            results_uri=str(root / "results"))
        engine = open_record(url, migrate=bool(reuse))
        if reuse:
            restore_cohort_indexes(engine)
            reset_steps(engine, plan)
        dropped = drop_cohort_indexes(engine) if without_indexes else []
        record_s: float | None = None
        if not reuse:
            started = time.perf_counter()
            record_cohort(engine, settings, root / "models", plan, batch=batch, seed=seed, processes=processes)
            record_s = round(time.perf_counter() - started, 3)
        engine.dispose()
        analyze(url)
        results, problems = run_steps(settings, root / "models", studies, root)
    expected = expected_rows(plan)
    problems += [f"{step}: {rows} rows, the plan says {expected[step]}" for step, (_, rows) in results.items()
                 if rows != expected[step]]
    flat: dict[str, Any] = {"studies": studies, "indexes_dropped": len(dropped), "record_cohort_s": record_s}
    for step in STEPS:
        seconds, rows = results[step]
        flat[f"{step}_s"] = round(seconds, 4)
        flat[f"{step}_rows"] = rows
    return flat, problems


def table(result: dict[str, Any]) -> Table:
    """The result as a rich table."""
    out = Table(title=f"bench.scale: {result['studies']} studies"
                      + (" (without the indexes of 0009)" if result["indexes_dropped"] else ""))
    for column in ("step", "seconds", "rows"):
        out.add_column(column, justify="left" if column == "step" else "right")
    recorded = result["record_cohort_s"]
    out.add_row("record the cohort (not a command)", "reused" if recorded is None else f"{recorded:.1f}", "")
    for step in STEPS:
        out.add_row(step, f"{result[f'{step}_s']:.3f}", str(result[f"{step}_rows"]))
    return out


def main() -> None:
    """Record a generated cohort of N studies and time the commands and views on it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--json", type=Path, help="write the result here: one flat object")
    parser.add_argument("--batch", type=int, default=500, help="studies recorded per transaction")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="processes recording the cohort (default: one per CPU core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--without-indexes", action="store_true",
                        help="drop the indexes of revision 0009 first (the record before them)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (its URL is printed)")
    parser.add_argument("--reuse", metavar="NAME",
                        help="time the steps on database NAME, kept by --keep (same --studies and --seed)")
    parser.add_argument("--postgres", default=os.environ.get("HEARTSEG_TEST_POSTGRES_URL",
                                                             "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    if min(args.studies, args.batch, args.processes) < 1:
        parser.error("--studies, --batch and --processes must be at least 1")
    result, problems = benchmark(args.postgres, args.studies, batch=args.batch, seed=args.seed,
                                 processes=args.processes, without_indexes=args.without_indexes, keep=args.keep,
                                 reuse=args.reuse)
    Console().print(table(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if problems:
        raise SystemExit("the steps' rows differ from the cohort's plan:\n" + "\n".join(problems))


if __name__ == "__main__":
    main()
