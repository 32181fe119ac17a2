"""The record at cohort scale: indexes the plans of the run's questions ask for, and three views rewritten on
PostgreSQL so that a run of 100,000 studies is answered in well under two seconds.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

Indexes (``python -m bench.scale``'s plans, ``docs/bench-scale.md``):

* ``ix_studies_run_id_status`` on ``studies (run_id, status)``, in place of ``ix_studies_run_id``: a run's
  studies per status (``run_status_counts``, ``heartseg status``, ``run_failures``, a resubmitted run's studies
  not queued, ``retry --failed``) come from the index instead of a bitmap of all the run's studies ANDed with
  one of all the record's studies in that status. It serves ``run_id``'s foreign key as the old one did.
* ``ix_qc_flags_study_id_model_id`` on ``qc_flags (study_id, model_id)``, in place of ``ix_qc_flags_study_id``:
  ``run_qc`` looks up a study's flags of its run's model; the model is now in the index, not a filter.

Views, on PostgreSQL (SQLite keeps the SQL of revisions 0002 and 0006: it has neither ``stddev_samp``,
``percentile_cont`` nor ``LATERAL``, and its records are small):

* ``cohort_metric_stats``: one ``GROUP BY`` with ``stddev_samp`` and ``percentile_cont(0.5)`` instead of three
  window functions over every value of the record sorted by group and value; a ``WHERE run = ...`` is pushed
  into the grouping.
* ``run_index_agreement``: one ``GROUP BY`` over the pairs unpivoted by ``LATERAL (VALUES ...)``, instead of CTEs
  that PostgreSQL materialises for every run before ``WHERE run = ...`` is applied.
* ``run_qc``: one ``LATERAL`` aggregate of a study's flags instead of three correlated subqueries.

Same columns, types and values (the SD and median up to rounding: ``stddev_samp`` and ``percentile_cont``
against the two-pass formula and the mean of the middle values).
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: The indexes this revision adds: ``(name, table, columns)``.
INDEXES = (
    ("ix_studies_run_id_status", "studies", ("run_id", "status")),
    ("ix_qc_flags_study_id_model_id", "qc_flags", ("study_id", "model_id")),
)
#: The indexes they replace (a prefix of theirs): ``(name, table, columns)``, created again by the downgrade.
REPLACED = (
    ("ix_studies_run_id", "studies", ("run_id",)),
    ("ix_qc_flags_study_id", "qc_flags", ("study_id",)),
)

_INDICES = ("lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef_pct", "rv_edv_ml", "rv_esv_ml", "rv_sv_ml", "rv_ef_pct",
            "myo_mass_g")

COHORT_METRIC_STATS = """
SELECT r.name AS run, COALESCE(s.pathology_group, 'unknown') AS pathology_group, m.structure, v.measure,
       COUNT(*) AS n, AVG(v.value) AS mean, stddev_samp(v.value) AS sd,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY v.value) AS median
FROM metrics m JOIN studies s ON s.id = m.study_id JOIN runs r ON r.id = s.run_id
CROSS JOIN LATERAL (VALUES ('dice', m.dice), ('hd95_mm', m.hd95_mm)) AS v (measure, value)
WHERE v.value IS NOT NULL
GROUP BY r.name, COALESCE(s.pathology_group, 'unknown'), m.structure, v.measure
"""

_PAIRS = ", ".join(f"('{name}', p.{name}, f.{name})" for name in _INDICES)
RUN_INDEX_AGREEMENT = f"""
SELECT r.name AS run, v.index_name, COUNT(*) AS n, AVG(v.pred) AS mean_pred, AVG(v.ref) AS mean_ref,
       AVG(v.pred - v.ref) AS bias, stddev_samp(v.pred - v.ref) AS sd_diff,
       AVG(v.pred - v.ref) - 1.96 * stddev_samp(v.pred - v.ref) AS loa_lower,
       AVG(v.pred - v.ref) + 1.96 * stddev_samp(v.pred - v.ref) AS loa_upper
FROM cardiac_indices p
JOIN cardiac_indices f ON f.study_id = p.study_id AND f.model_id = p.model_id AND f.source = 'ref'
JOIN studies s ON s.id = p.study_id JOIN runs r ON r.id = s.run_id
CROSS JOIN LATERAL (VALUES {_PAIRS}) AS v (index_name, pred, ref)
WHERE p.source = 'pred' AND v.pred IS NOT NULL AND v.ref IS NOT NULL
GROUP BY r.name, v.index_name
"""

RUN_QC = """
SELECT r.name AS run, s.id AS study_id, s.patient_id, s.pathology_group, s.status, q.n_flags, q.severity, q.flags
FROM studies s JOIN runs r ON r.id = s.run_id
CROSS JOIN LATERAL (
    SELECT COUNT(*) AS n_flags, COALESCE(SUM(f.severity), 0) AS severity,
           COALESCE(string_agg(f.reason, '; ' ORDER BY f.severity DESC, f.id), '') AS flags
    FROM qc_flags f WHERE f.study_id = s.id AND f.model_id = r.model_id
) AS q
"""

#: The views this revision replaces on PostgreSQL: ``{name: select}``.
POSTGRESQL_VIEWS = {
    "cohort_metric_stats": COHORT_METRIC_STATS,
    "run_index_agreement": RUN_INDEX_AGREEMENT,
    "run_qc": RUN_QC,
}


def _earlier_views() -> dict[str, str]:
    """The SQL of :data:`POSTGRESQL_VIEWS` as revisions 0002 and 0006 made them (PostgreSQL's)."""
    script = op.get_context().script
    cohort = script.get_revision("0002") if script is not None else None
    qc = script.get_revision("0006") if script is not None else None
    if cohort is None or qc is None:
        raise RuntimeError("revision 0009 needs revisions 0002 and 0006 in the script directory (their views)")
    views = {name: cohort.module.VIEWS[name] for name in ("cohort_metric_stats", "run_index_agreement")}
    views["run_qc"] = qc.module.VIEWS["run_qc"]("postgresql")
    return views


def _replace_views(views: dict[str, str]) -> None:
    for name, select in views.items():
        op.execute(f"DROP VIEW IF EXISTS {name}")
        op.execute(f"CREATE VIEW {name} AS {select}")


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, list(columns), unique=False)
    for name, table, _ in REPLACED:
        op.drop_index(name, table_name=table)
    if op.get_context().dialect.name == "postgresql":
        _replace_views(POSTGRESQL_VIEWS)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        _replace_views(_earlier_views())
    for name, table, columns in REPLACED:
        op.create_index(name, table, list(columns), unique=False)
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
