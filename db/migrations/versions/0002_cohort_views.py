"""Cohort statistics as SQL views (the same SQL on PostgreSQL and SQLite >= 3.35).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Views (each answers one question a user asks of a cohort):

* ``cohort_metric_stats``: per run, pathology group, structure and measure (``dice`` or
  ``hd95_mm``): n, mean, sample SD, median over all recorded frames.
* ``run_index_agreement``: per run and cardiac index, Bland-Altman agreement of the index
  from predicted masks with the index from reference masks: n, mean of each, bias
  (pred - ref), SD of the differences and the 95% limits of agreement (bias +- 1.96 SD).
* ``run_status_counts``: per run and study status, the number of studies.
* ``run_failures``: per run and error message, the number of failed studies.
* ``run_dice_comparison``: for every ordered pair of runs, the studies they share (same
  source URI): Dice of each run per frame and structure and the delta (run_b - run_a).
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDICES = ("lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef_pct", "rv_edv_ml", "rv_esv_ml", "rv_sv_ml", "rv_ef_pct",
           "myo_mass_g")

COHORT_METRIC_STATS = """
WITH vals AS (
    SELECT r.name AS run, COALESCE(s.pathology_group, 'unknown') AS pathology_group, m.structure,
           'dice' AS measure, m.dice AS value
    FROM metrics m JOIN studies s ON s.id = m.study_id JOIN runs r ON r.id = s.run_id
    WHERE m.dice IS NOT NULL
    UNION ALL
    SELECT r.name, COALESCE(s.pathology_group, 'unknown'), m.structure, 'hd95_mm', m.hd95_mm
    FROM metrics m JOIN studies s ON s.id = m.study_id JOIN runs r ON r.id = s.run_id
    WHERE m.hd95_mm IS NOT NULL
),
ranked AS (
    SELECT run, pathology_group, structure, measure, value,
           ROW_NUMBER() OVER (PARTITION BY run, pathology_group, structure, measure ORDER BY value) AS k,
           COUNT(*) OVER (PARTITION BY run, pathology_group, structure, measure) AS n,
           AVG(value) OVER (PARTITION BY run, pathology_group, structure, measure) AS mean
    FROM vals
)
SELECT run, pathology_group, structure, measure, n, mean,
       CASE WHEN n > 1 THEN SQRT(SUM((value - mean) * (value - mean)) / (n - 1)) END AS sd,
       AVG(CASE WHEN k = (n + 1) / 2 OR k = (n + 2) / 2 THEN value END) AS median
FROM ranked
GROUP BY run, pathology_group, structure, measure, n, mean
"""

_DIFFS = "\n    UNION ALL\n".join(
    f"    SELECT run, '{name}' AS index_name, pred_{name} AS pred, ref_{name} AS ref FROM pairs" for name in INDICES
)
RUN_INDEX_AGREEMENT = f"""
WITH pairs AS (
    SELECT r.name AS run, {", ".join(f"p.{n} AS pred_{n}, f.{n} AS ref_{n}" for n in INDICES)}
    FROM cardiac_indices p
    JOIN cardiac_indices f ON f.study_id = p.study_id AND f.model_id = p.model_id AND f.source = 'ref'
    JOIN studies s ON s.id = p.study_id JOIN runs r ON r.id = s.run_id
    WHERE p.source = 'pred'
),
diffs AS (
    SELECT run, index_name, pred, ref, pred - ref AS diff FROM (
{_DIFFS}
    ) u WHERE pred IS NOT NULL AND ref IS NOT NULL
),
stats AS (
    SELECT run, index_name, COUNT(*) AS n, AVG(pred) AS mean_pred, AVG(ref) AS mean_ref, AVG(diff) AS bias
    FROM diffs GROUP BY run, index_name
),
spread AS (
    SELECT st.run, st.index_name,
           CASE WHEN st.n > 1 THEN SQRT(SUM((d.diff - st.bias) * (d.diff - st.bias)) / (st.n - 1)) END AS sd_diff
    FROM stats st JOIN diffs d ON d.run = st.run AND d.index_name = st.index_name
    GROUP BY st.run, st.index_name, st.n, st.bias
)
SELECT st.run, st.index_name, st.n, st.mean_pred, st.mean_ref, st.bias, sp.sd_diff,
       st.bias - 1.96 * sp.sd_diff AS loa_lower, st.bias + 1.96 * sp.sd_diff AS loa_upper
FROM stats st JOIN spread sp ON sp.run = st.run AND sp.index_name = st.index_name
"""

RUN_STATUS_COUNTS = """
SELECT r.name AS run, s.status, COUNT(*) AS n_studies
FROM studies s JOIN runs r ON r.id = s.run_id
GROUP BY r.name, s.status
"""

RUN_FAILURES = """
SELECT r.name AS run, s.error, COUNT(*) AS n_studies, MIN(s.source_uri) AS example_source
FROM studies s JOIN runs r ON r.id = s.run_id
WHERE s.status = 'failed'
GROUP BY r.name, s.error
"""

RUN_DICE_COMPARISON = """
SELECT ra.name AS run_a, rb.name AS run_b, sa.source_uri, sa.patient_id, ma.frame, ma.phase, ma.structure,
       ma.dice AS dice_a, mb.dice AS dice_b, mb.dice - ma.dice AS dice_delta
FROM studies sa
JOIN studies sb ON sb.source_uri = sa.source_uri AND sb.run_id <> sa.run_id
JOIN runs ra ON ra.id = sa.run_id
JOIN runs rb ON rb.id = sb.run_id
JOIN metrics ma ON ma.study_id = sa.id
JOIN metrics mb ON mb.study_id = sb.id AND mb.frame = ma.frame AND mb.structure = ma.structure
"""

VIEWS = {
    "cohort_metric_stats": COHORT_METRIC_STATS,
    "run_index_agreement": RUN_INDEX_AGREEMENT,
    "run_status_counts": RUN_STATUS_COUNTS,
    "run_failures": RUN_FAILURES,
    "run_dice_comparison": RUN_DICE_COMPARISON,
}


def upgrade() -> None:
    for name, select in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {select}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
