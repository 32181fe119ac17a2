"""Cohort questions answered from the views, and the long export tables."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from heartseg.errors import HeartSegError

METRICS_COLUMNS = ("study", "phase", "frame", "structure", "dice", "iou", "tp", "fp", "fn", "hd95_mm", "assd_mm",
                   "vol_pred_ml", "vol_ref_ml")
INDICES_COLUMNS = ("study", "group", "source", "lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef_pct", "rv_edv_ml",
                   "rv_esv_ml", "rv_sv_ml", "rv_ef_pct", "myo_mass_g")

_METRICS_SQL = """
SELECT s.patient_id AS study, m.phase, m.frame, m.structure, m.dice, m.iou, m.tp, m.fp, m.fn, m.hd95_mm, m.assd_mm,
       m.vol_pred_ml, m.vol_ref_ml
FROM metrics m JOIN studies s ON s.id = m.study_id JOIN runs r ON r.id = s.run_id
WHERE r.name = :run
ORDER BY s.patient_id, m.frame, CASE m.structure WHEN 'RV' THEN 1 WHEN 'MYO' THEN 2 ELSE 3 END
"""
_INDICES_SQL = """
SELECT s.patient_id AS study, s.pathology_group AS "group", c.source, c.lv_edv_ml, c.lv_esv_ml, c.lv_sv_ml,
       c.lv_ef_pct, c.rv_edv_ml, c.rv_esv_ml, c.rv_sv_ml, c.rv_ef_pct, c.myo_mass_g
FROM cardiac_indices c JOIN studies s ON s.id = c.study_id JOIN runs r ON r.id = s.run_id
WHERE r.name = :run
ORDER BY s.patient_id, c.source
"""


_LV_EF_SQL = """
SELECT s.patient_id AS patient, s.source_uri, p.lv_ef_pct AS pred_ef, f.lv_ef_pct AS ref_ef
FROM studies s JOIN runs r ON r.id = s.run_id
JOIN cardiac_indices p ON p.study_id = s.id AND p.source = 'pred'
JOIN cardiac_indices f ON f.study_id = s.id AND f.source = 'ref'
WHERE r.name = :run ORDER BY s.patient_id
"""


class UnknownRunError(HeartSegError):
    """No run of that name in the record."""


def fetch(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows of a query as dictionaries (built from the result's keys: a run's long rows are hundreds of thousands)."""
    with engine.connect() as connection:
        result = connection.execute(text(sql), params)
        keys = tuple(result.keys())
        return [dict(zip(keys, row, strict=True)) for row in result]


def require_run(engine: Engine, run: str) -> int:
    """The id of run ``run``; :class:`UnknownRunError` naming the runs that exist if there is none."""
    rows = fetch(engine, "SELECT id, name FROM runs ORDER BY created_at, id")
    ids = {r["name"]: int(r["id"]) for r in rows}
    if run not in ids:
        raise UnknownRunError(f"no run named {run!r} in the record; runs: {', '.join(ids) or 'none'}")
    return ids[run]


def run_report(engine: Engine, run: str) -> dict[str, list[dict[str, Any]]]:
    """Everything ``heartseg report`` shows for a run, from the views."""
    require_run(engine, run)
    return {
        "status": fetch(engine, "SELECT status, n_studies FROM run_status_counts WHERE run = :run ORDER BY status",
                        run=run),
        "metrics": fetch(engine, "SELECT pathology_group, structure, measure, n, mean, sd, median "
                                 "FROM cohort_metric_stats WHERE run = :run "
                                 "ORDER BY measure, pathology_group, structure", run=run),
        "agreement": fetch(engine, "SELECT index_name, n, mean_pred, mean_ref, bias, sd_diff, loa_lower, loa_upper "
                                   "FROM run_index_agreement WHERE run = :run ORDER BY index_name", run=run),
        "failures": fetch(engine, "SELECT error, n_studies FROM run_failures WHERE run = :run "
                                  "ORDER BY n_studies DESC", run=run),
    }


#: The columns of view ``run_qc``, in order.
RUN_QC_COLUMNS = ("run", "study_id", "patient_id", "pathology_group", "status", "n_flags", "severity", "flags")


def run_qc(engine: Engine, run: str) -> list[dict[str, Any]]:
    """One row per study of ``run`` from view ``run_qc`` (:data:`RUN_QC_COLUMNS`), most severe first, then by
    patient: ``severity`` is the sum of its QC flags' severities (0 when none), ``flags`` their reasons joined
    with ``'; '`` (``''`` when none). :class:`UnknownRunError` when there is no such run."""
    require_run(engine, run)
    return fetch(engine, "SELECT * FROM run_qc WHERE run = :run ORDER BY severity DESC, patient_id, study_id", run=run)


def lv_ef_pairs(engine: Engine, run: str) -> list[dict[str, Any]]:
    """Per study of ``run`` with both: its source and LV EF from the predicted and the reference masks."""
    return fetch(engine, _LV_EF_SQL, run=run)


def _write(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row[c] is None else row[c] for c in columns])
    return len(rows)


def export_run(engine: Engine, run: str, metrics_csv: Path | None, indices_csv: Path | None) -> tuple[int, int]:
    """Write the run's metrics and indices long tables (NULL as an empty cell); returns the row counts."""
    require_run(engine, run)
    n_metrics = _write(metrics_csv, METRICS_COLUMNS, fetch(engine, _METRICS_SQL, run=run)) if metrics_csv else 0
    n_indices = _write(indices_csv, INDICES_COLUMNS, fetch(engine, _INDICES_SQL, run=run)) if indices_csv else 0
    return n_metrics, n_indices


# --- the wide export: one row per study ---

#: The structures and phases of the ``dice_<structure>_<phase>`` columns of :data:`WIDE_COLUMNS`, in order.
WIDE_STRUCTURES = ("RV", "MYO", "LV")
WIDE_PHASES = ("ED", "ES")
#: The cardiac indices of the ``<index>_pred`` and ``<index>_ref`` columns of :data:`WIDE_COLUMNS`, in order.
WIDE_INDICES = ("lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef_pct", "rv_edv_ml", "rv_esv_ml", "rv_sv_ml",
                "rv_ef_pct", "myo_mass_g")
#: The columns of ``heartseg export RUN --wide FILE``, in order: the study, its indices from the predicted and
#: the reference masks (each index's pair side by side), Dice and the segmenter's predicted Dice per structure
#: and phase, its QC flags (as view ``run_qc``) and the error of a failed study.
WIDE_COLUMNS = (
    "study", "group", "status", "ed_frame", "es_frame",
    *(f"{name}_{source}" for name in WIDE_INDICES for source in ("pred", "ref")),
    *(f"dice_{structure}_{phase}" for structure in WIDE_STRUCTURES for phase in WIDE_PHASES),
    *(f"predicted_dice_{structure}_{phase}" for structure in WIDE_STRUCTURES for phase in WIDE_PHASES),
    "n_flags", "severity", "flags", "error",
)

_WIDE_STUDIES_SQL = """
SELECT s.id AS study_id, s.patient_id AS study, s.pathology_group AS "group", s.status, s.ed_frame, s.es_frame,
       s.error
FROM studies s JOIN runs r ON r.id = s.run_id
WHERE r.name = :run
ORDER BY s.patient_id, s.id
"""
_WIDE_INDICES_SQL = f"""
SELECT c.study_id, c.source, {", ".join(f"c.{n}" for n in WIDE_INDICES)}
FROM cardiac_indices c JOIN studies s ON s.id = c.study_id JOIN runs r ON r.id = s.run_id
WHERE r.name = :run AND c.model_id = r.model_id
"""
_WIDE_DICE_SQL = """
SELECT m.study_id, m.phase, m.structure, m.dice
FROM metrics m JOIN studies s ON s.id = m.study_id JOIN runs r ON r.id = s.run_id
WHERE r.name = :run AND m.model_id = r.model_id AND m.phase IN ('ED', 'ES')
"""
_WIDE_PREDICTED_DICE_SQL = """
SELECT q.study_id, q.phase, q.structure, q.predicted_dice
FROM frame_quality q JOIN studies s ON s.id = q.study_id JOIN runs r ON r.id = s.run_id
WHERE r.name = :run AND q.model_id = r.model_id AND q.phase IN ('ED', 'ES')
"""


def run_wide_rows(engine: Engine, run: str) -> list[dict[str, Any]]:
    """One row per study of ``run`` with the columns :data:`WIDE_COLUMNS` (None where there is no value), by
    patient: the long rows of ``studies``, ``cardiac_indices``, ``metrics`` and ``frame_quality`` (the run's
    model's) and of view ``run_qc``, pivoted here so that the same SQL serves PostgreSQL and SQLite.
    :class:`UnknownRunError` when there is no such run."""
    require_run(engine, run)
    rows: dict[int, dict[str, Any]] = {}
    for study in fetch(engine, _WIDE_STUDIES_SQL, run=run):
        row = dict.fromkeys(WIDE_COLUMNS)
        row.update({k: v for k, v in study.items() if k != "study_id"})
        rows[int(study["study_id"])] = row
    for index in fetch(engine, _WIDE_INDICES_SQL, run=run):
        row = rows[int(index["study_id"])]
        for name in WIDE_INDICES:
            row[f"{name}_{index['source']}"] = index[name]
    for metric in fetch(engine, _WIDE_DICE_SQL, run=run):
        rows[int(metric["study_id"])][f"dice_{metric['structure']}_{metric['phase']}"] = metric["dice"]
    for quality in fetch(engine, _WIDE_PREDICTED_DICE_SQL, run=run):
        rows[int(quality["study_id"])][f"predicted_dice_{quality['structure']}_{quality['phase']}"] \
            = quality["predicted_dice"]
    for qc in run_qc(engine, run):
        rows[int(qc["study_id"])].update({k: qc[k] for k in ("n_flags", "severity", "flags")})
    return list(rows.values())


def export_wide(engine: Engine, run: str, path: Path) -> int:
    """Write :func:`run_wide_rows` as CSV (header :data:`WIDE_COLUMNS`, NULL as an empty cell); returns the
    number of studies written."""
    return _write(path, WIDE_COLUMNS, run_wide_rows(engine, run))


# --- the cohort report page (scheduler.report_page) ---

#: The cardiac indices whose predicted and reference values :func:`run_index_pairs` returns.
PAIRED_INDICES = ("lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef_pct", "rv_edv_ml", "rv_esv_ml", "rv_sv_ml",
                  "rv_ef_pct", "myo_mass_g")

_RUN_METRIC_ROWS_SQL = """
SELECT s.id AS study_id, s.patient_id, COALESCE(s.pathology_group, 'unknown') AS pathology_group, m.frame, m.phase,
       m.structure, m.dice, m.hd95_mm
FROM metrics m JOIN studies s ON s.id = m.study_id JOIN runs r ON r.id = s.run_id
WHERE r.name = :run
ORDER BY s.patient_id, s.id, m.frame, CASE m.structure WHEN 'RV' THEN 1 WHEN 'MYO' THEN 2 ELSE 3 END
"""
_RUN_INDEX_PAIRS_SQL = f"""
SELECT s.id AS study_id, s.patient_id, COALESCE(s.pathology_group, 'unknown') AS pathology_group,
       {", ".join(f"p.{n} AS pred_{n}, f.{n} AS ref_{n}" for n in PAIRED_INDICES)}
FROM cardiac_indices p
JOIN cardiac_indices f ON f.study_id = p.study_id AND f.model_id = p.model_id AND f.source = 'ref'
JOIN studies s ON s.id = p.study_id JOIN runs r ON r.id = s.run_id
WHERE r.name = :run AND p.source = 'pred'
ORDER BY s.patient_id, s.id
"""
_RUN_QUALITY_ROWS_SQL = """
SELECT s.id AS study_id, s.patient_id, s.pathology_group, q.frame, q.phase, q.structure, q.predicted_dice, m.dice
FROM frame_quality q JOIN studies s ON s.id = q.study_id JOIN runs r ON r.id = s.run_id
LEFT JOIN metrics m ON m.study_id = q.study_id AND m.model_id = q.model_id AND m.frame = q.frame
     AND m.structure = q.structure
WHERE r.name = :run AND q.model_id = r.model_id
ORDER BY s.patient_id, s.id, q.frame, CASE q.structure WHEN 'RV' THEN 1 WHEN 'MYO' THEN 2 ELSE 3 END
"""
_RUN_STUDY_MASKS_SQL = """
SELECT s.id AS study_id, s.patient_id, s.source_uri, k.frame, k.phase, k.uri
FROM masks k JOIN studies s ON s.id = k.study_id JOIN runs r ON r.id = s.run_id
WHERE r.name = :run AND k.model_id = r.model_id AND k.phase IN ('ED', 'ES')
ORDER BY s.patient_id, s.id, k.frame
"""
_RUN_FAILED_STUDIES_SQL = """
SELECT s.id AS study_id, s.patient_id, s.source_uri, s.error
FROM studies s JOIN runs r ON r.id = s.run_id
WHERE r.name = :run AND s.status = 'failed'
ORDER BY s.patient_id, s.id
"""


def run_metric_rows(engine: Engine, run: str) -> list[dict[str, Any]]:
    """Per study, frame and structure of ``run``: Dice and HD95 (NULL where undefined), with the study's
    patient, group (``'unknown'`` when none) and phase: the values ``cohort_metric_stats`` summarises."""
    return fetch(engine, _RUN_METRIC_ROWS_SQL, run=run)


def run_index_pairs(engine: Engine, run: str) -> list[dict[str, Any]]:
    """Per study of ``run`` with indices from both masks: ``pred_<index>`` and ``ref_<index>`` of every
    index of :data:`PAIRED_INDICES` (the pairs ``run_index_agreement`` summarises)."""
    return fetch(engine, _RUN_INDEX_PAIRS_SQL, run=run)


def run_quality_rows(engine: Engine, run: str) -> list[dict[str, Any]]:
    """Per study, frame and structure of ``run`` with a ``frame_quality`` row (its model's): the predicted Dice
    (NULL without a calibration) and the Dice against the reference (NULL without one, or where undefined),
    with the study's patient, group and the frame's phase."""
    return fetch(engine, _RUN_QUALITY_ROWS_SQL, run=run)


def run_study_masks(engine: Engine, run: str) -> list[dict[str, Any]]:
    """The ED and ES masks of ``run``'s studies (its model's): study, source, frame, phase, mask URI."""
    return fetch(engine, _RUN_STUDY_MASKS_SQL, run=run)


def run_has_dicomweb_studies(engine: Engine, run: str) -> bool:
    """Whether any study of ``run`` comes from a DICOMweb service (``dicomweb://`` or ``dicomwebs://``): one
    indexed look, before the run's masks and flags are read for viewer links."""
    return bool(fetch(engine, "SELECT EXISTS (SELECT 1 FROM studies s JOIN runs r ON r.id = s.run_id "
                              "WHERE r.name = :run AND s.source_uri LIKE 'dicomweb%') AS found", run=run)[0]["found"])


def run_failed_studies(engine: Engine, run: str) -> list[dict[str, Any]]:
    """The failed studies of ``run``: patient, source and the recorded reason."""
    return fetch(engine, _RUN_FAILED_STUDIES_SQL, run=run)


# --- the report's aggregates, computed by PostgreSQL (scheduler.report_page.summary on SQLite computes them from
# the long rows above) ---

_RUN_METRIC_STATS_SQL = """
SELECT m.structure, m.phase, GROUPING(m.phase) AS all_phases, v.measure, COUNT(*) AS n, AVG(v.value) AS mean,
       stddev_samp(v.value) AS sd, percentile_cont(0.5) WITHIN GROUP (ORDER BY v.value) AS median
FROM metrics m JOIN studies s ON s.id = m.study_id JOIN runs r ON r.id = s.run_id
CROSS JOIN LATERAL (VALUES ('dice', m.dice), ('hd95_mm', m.hd95_mm)) AS v (measure, value)
WHERE r.name = :run AND v.value IS NOT NULL
GROUP BY GROUPING SETS ((m.structure, v.measure), (m.structure, m.phase, v.measure))
"""
_RUN_LOWEST_MEAN_DICE_SQL = """
SELECT s.id AS study_id, s.patient_id, COALESCE(s.pathology_group, 'unknown') AS pathology_group,
       AVG(m.dice) AS mean_dice
FROM metrics m JOIN studies s ON s.id = m.study_id JOIN runs r ON r.id = s.run_id
WHERE r.name = :run AND m.dice IS NOT NULL
GROUP BY s.id, s.patient_id, s.pathology_group
ORDER BY mean_dice, s.patient_id, s.id
LIMIT :n
"""
_QUALITY_FROM = """
FROM frame_quality q JOIN studies s ON s.id = q.study_id JOIN runs r ON r.id = s.run_id
LEFT JOIN metrics m ON m.study_id = q.study_id AND m.model_id = q.model_id AND m.frame = q.frame
     AND m.structure = q.structure
WHERE r.name = :run AND q.model_id = r.model_id AND q.predicted_dice IS NOT NULL
"""
_RUN_PREDICTED_QUALITY_SQL = f"""
SELECT q.structure, q.phase, COUNT(*) AS n, AVG(q.predicted_dice) AS mean_predicted_dice,
       COUNT(m.dice) AS n_reference, AVG(ABS(q.predicted_dice - m.dice)) AS mean_abs_error,
       corr(q.predicted_dice, m.dice) AS correlation
{_QUALITY_FROM}
GROUP BY q.structure, q.phase
"""
_RUN_LOWEST_PREDICTED_SQL = f"""
SELECT DISTINCT ON (s.id) s.id AS study_id, s.patient_id, s.pathology_group, q.predicted_dice AS min_predicted_dice,
       q.structure, q.phase, q.frame, m.dice
{_QUALITY_FROM}
ORDER BY s.id, q.predicted_dice, q.frame, CASE q.structure WHEN 'RV' THEN 1 WHEN 'MYO' THEN 2 ELSE 3 END
"""


def run_metric_stats(engine: Engine, run: str) -> list[dict[str, Any]]:
    """PostgreSQL only: per structure (``all_phases`` 1, ``phase`` NULL) and per structure and phase
    (``all_phases`` 0) and measure (``dice``, ``hd95_mm``) of ``run``'s metrics: n, mean, sample SD (NULL below two
    values) and median, the statistics :func:`run_metric_rows` gives the values of."""
    return fetch(engine, _RUN_METRIC_STATS_SQL, run=run)


def run_lowest_mean_dice(engine: Engine, run: str, n: int) -> list[dict[str, Any]]:
    """PostgreSQL and SQLite: the ``n`` studies of ``run`` with the lowest mean Dice over their frames and
    structures (then by patient and id): study, patient, group (``'unknown'`` when none), ``mean_dice``."""
    return fetch(engine, _RUN_LOWEST_MEAN_DICE_SQL, run=run, n=n)


def run_predicted_quality(engine: Engine, run: str) -> list[dict[str, Any]]:
    """PostgreSQL only: per structure and phase of ``run``'s ``frame_quality`` rows with a predicted Dice (its
    model's): n, the mean predicted Dice, and over the ``n_reference`` with a defined Dice against a reference the
    mean absolute error and Pearson's correlation (NULL where undefined)."""
    return fetch(engine, _RUN_PREDICTED_QUALITY_SQL, run=run)


def run_lowest_predicted_dice(engine: Engine, run: str) -> list[dict[str, Any]]:
    """PostgreSQL only: per study of ``run`` with a predicted Dice, its lowest (the first by frame and structure
    where several are as low) and where it is, with the Dice against the reference there (NULL without one)."""
    return fetch(engine, _RUN_LOWEST_PREDICTED_SQL, run=run)
