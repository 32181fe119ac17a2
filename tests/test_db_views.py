"""The cohort views give the numbers numpy computes from the same known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sqlalchemy import text, update

from db.migrate import upgrade
from db.schema import Study
from db.session import make_engine, session_scope
from db.writes import record_indices, record_metrics
from heartseg.enums import IndexSource, StudyStatus
from heartseg.labels import STRUCTURES, Phase, Structure
from tests.record_fixtures import index_values, metric_values, new_run

GROUPS = ["NOR", "NOR", "NOR", "DCM", "DCM", "DCM", "DCM"]
SOURCES = [f"/data/patient{i:03d}" for i in range(len(GROUPS))]


@pytest.fixture
def record(record_url: str):
    rng = np.random.default_rng(7)
    engine = make_engine(record_url)
    upgrade(engine)
    known: dict[str, dict] = {}
    for run, fingerprint in (("run-a", "a" * 64), ("run-b", "b" * 64)):
        model_id, studies = new_run(engine, run, fingerprint=fingerprint, sources=SOURCES, groups=GROUPS)
        dice = {(s, f, st): float(rng.uniform(0.6, 0.98)) for s in SOURCES for f in (1, 10)
                for st in STRUCTURES}
        hd95 = {key: float(rng.uniform(1, 15)) for key in dice}
        hd95[(SOURCES[0], 1, Structure.RV)] = math.inf  # stored as NULL, left out of the statistics
        edv = {s: (float(rng.uniform(90, 250)), float(rng.uniform(90, 250))) for s in SOURCES}
        esv = {s: (float(rng.uniform(30, 80)), float(rng.uniform(30, 80))) for s in SOURCES}
        with session_scope(engine) as session:
            for s in SOURCES:
                for f, phase in ((1, Phase.ED), (10, Phase.ES)):
                    record_metrics(session, study_id=studies[s], model_id=model_id, frame=f, phase=phase,
                                   metrics={st: metric_values(dice[(s, f, st)], hd95[(s, f, st)])
                                            for st in STRUCTURES})
                record_indices(session, study_id=studies[s], model_id=model_id, source=IndexSource.PRED,
                               indices=index_values(edv[s][0], esv[s][0]))
                record_indices(session, study_id=studies[s], model_id=model_id, source=IndexSource.REF,
                               indices=index_values(edv[s][1], esv[s][1]))
            statuses = [StudyStatus.DONE] * 5 + [StudyStatus.FAILED] * 2
            errors = [None] * 5 + ["x.nii.gz: file not found", "x.nii.gz: file not found"]
            for s, status, error in zip(SOURCES, statuses, errors, strict=True):
                session.execute(update(Study).where(Study.id == studies[s])
                                .values(status=status, error=error))
        known[run] = {"dice": dice, "hd95": hd95, "edv": edv, "esv": esv}
    yield engine, known
    engine.dispose()


def rows(engine, sql: str, **params: object) -> list[dict]:
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(text(sql), params)]


def test_metric_stats_by_group(record) -> None:
    engine, known = record
    got = rows(engine, "SELECT * FROM cohort_metric_stats ORDER BY run, pathology_group, structure, measure")
    assert len(got) == 2 * 2 * 3 * 2  # runs x groups x structures x measures
    for row in got:
        values = known[row["run"]]["dice" if row["measure"] == "dice" else "hd95"]
        sample = np.array([v for (s, _, st), v in values.items()
                           if st == row["structure"] and GROUPS[SOURCES.index(s)] == row["pathology_group"]
                           and math.isfinite(v)])
        assert row["n"] == len(sample)
        assert row["mean"] == pytest.approx(sample.mean(), abs=1e-9)
        assert row["sd"] == pytest.approx(sample.std(ddof=1), abs=1e-9)
        assert row["median"] == pytest.approx(np.median(sample), abs=1e-9)


def test_bland_altman_of_indices(record) -> None:
    engine, known = record
    got = {(r["run"], r["index_name"]): r for r in rows(engine, "SELECT * FROM run_index_agreement")}
    assert len(got) == 2 * 9
    for run, values in known.items():
        pred_ef = np.array([(values["edv"][s][0] - values["esv"][s][0]) / values["edv"][s][0] * 100 for s in SOURCES])
        ref_ef = np.array([(values["edv"][s][1] - values["esv"][s][1]) / values["edv"][s][1] * 100 for s in SOURCES])
        for name, pred, ref in (
            ("lv_ef_pct", pred_ef, ref_ef),
            ("lv_edv_ml", np.array([values["edv"][s][0] for s in SOURCES]),
             np.array([values["edv"][s][1] for s in SOURCES])),
        ):
            row = got[(run, name)]
            diff = pred - ref
            assert row["n"] == len(SOURCES)
            assert row["mean_pred"] == pytest.approx(pred.mean(), abs=1e-9)
            assert row["mean_ref"] == pytest.approx(ref.mean(), abs=1e-9)
            assert row["bias"] == pytest.approx(diff.mean(), abs=1e-9)
            assert row["sd_diff"] == pytest.approx(diff.std(ddof=1), abs=1e-9)
            assert row["loa_lower"] == pytest.approx(diff.mean() - 1.96 * diff.std(ddof=1), abs=1e-9)
            assert row["loa_upper"] == pytest.approx(diff.mean() + 1.96 * diff.std(ddof=1), abs=1e-9)
        # identical pred and ref: bias exactly 0
        assert got[(run, "rv_edv_ml")]["bias"] == pytest.approx(0.0, abs=1e-12)


def test_status_counts_and_failures(record) -> None:
    engine, _ = record
    status = {(r["run"], r["status"]): r["n_studies"] for r in rows(engine, "SELECT * FROM run_status_counts")}
    assert status == {("run-a", "done"): 5, ("run-a", "failed"): 2, ("run-b", "done"): 5, ("run-b", "failed"): 2}
    failures = rows(engine, "SELECT * FROM run_failures WHERE run = :run", run="run-a")
    assert [(r["error"], r["n_studies"]) for r in failures] == [("x.nii.gz: file not found", 2)]


def test_comparison_of_two_runs(record) -> None:
    engine, known = record
    got = rows(engine, "SELECT * FROM run_dice_comparison WHERE run_a = 'run-a' AND run_b = 'run-b'")
    assert len(got) == len(SOURCES) * 2 * 3
    for row in got:
        key = (row["source_uri"], row["frame"], row["structure"])
        assert row["dice_a"] == pytest.approx(known["run-a"]["dice"][key])
        assert row["dice_b"] == pytest.approx(known["run-b"]["dice"][key])
        assert row["dice_delta"] == pytest.approx(known["run-b"]["dice"][key] - known["run-a"]["dice"][key])
