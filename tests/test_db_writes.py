"""Idempotent writes, concurrency, and refusal of bad values."""

from __future__ import annotations

import math
import multiprocessing

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from db.migrate import upgrade
from db.records import RecordError
from db.schema import CardiacIndex, Mask, Metric, Model, Run, Study, StudyStatus
from db.session import make_engine, session_scope
from db.writes import add_studies, done_source_uris, ensure_run, record_metrics
from heartseg.labels import Phase
from tests.record_fixtures import metric_values, new_run, write_results


def counts(engine: object) -> tuple[int, int, int]:
    with session_scope(engine) as session:  # type: ignore[arg-type]
        return tuple(session.execute(select(func.count()).select_from(t)).scalar_one()  # type: ignore[return-value]
                     for t in (Mask, Metric, CardiacIndex))


def test_writing_twice_leaves_one_set_of_rows(record_url: str) -> None:
    engine = make_engine(record_url)
    upgrade(engine)
    model_id, studies = new_run(engine, "run-a", sources=["s1", "s2"])
    new_run(engine, "run-a", sources=["s1", "s2"])  # resubmitting adds nothing
    write_results(engine, studies["s1"], model_id)
    write_results(engine, studies["s1"], model_id, dice={"RV": 0.5, "MYO": 0.6, "LV": 0.7})
    assert counts(engine) == (2, 6, 2)
    with session_scope(engine) as session:
        assert session.execute(select(func.count()).select_from(Model)).scalar_one() == 1
        assert session.execute(select(func.count()).select_from(Study)).scalar_one() == 2
        # the later write wins: a retry records the latest result, once
        assert session.execute(select(Metric.dice).where(Metric.structure == "LV", Metric.frame == 1)).scalar_one() \
            == pytest.approx(0.7)
        with pytest.raises(RecordError, match="already exists with another model"):
            ensure_run(session, name="run-a", source_uri="/x", model_id=model_id + 1, frames="ed-es")
    engine.dispose()


def test_adding_studies_again_returns_the_kept_ids_with_the_new(record_url: str) -> None:
    engine = make_engine(record_url)
    upgrade(engine)
    _, first = new_run(engine, "run-a", sources=["s1", "s2"])
    with session_scope(engine) as session:
        run_id = session.execute(select(Run.id).where(Run.name == "run-a")).scalar_one()
        ids = add_studies(session, run_id, [{"source_uri": s, "patient_id": s} for s in ("s2", "s3", "s3")])
        rows = dict(session.execute(select(Study.source_uri, Study.id).where(Study.run_id == run_id)).all())
        statuses = set(session.execute(select(Study.status).where(Study.run_id == run_id)).scalars())
    assert rows.keys() == {"s1", "s2", "s3"} and rows["s2"] == first["s2"]
    assert ids == sorted([rows["s2"], rows["s3"]])
    assert statuses == {StudyStatus.QUEUED}
    engine.dispose()


def test_done_studies_are_found_by_model_fingerprint(record_url: str) -> None:
    engine = make_engine(record_url)
    upgrade(engine)
    _, studies = new_run(engine, "run-a", sources=["s1", "s2"])
    with session_scope(engine) as session:
        session.execute(Study.__table__.update().where(Study.id == studies["s1"]).values(status=StudyStatus.DONE))
    with session_scope(engine) as session:
        assert done_source_uris(session, "a" * 64) == {"s1"}
        assert done_source_uris(session, "b" * 64) == set()
    engine.dispose()


def _writer(url: str, study_id: int, model_id: int, barrier: multiprocessing.synchronize.Barrier, loops: int) -> None:
    engine = make_engine(url)
    barrier.wait()
    for i in range(loops):
        write_results(engine, study_id, model_id, dice={"RV": 0.5 + i / 100, "MYO": 0.6, "LV": 0.7})
    engine.dispose()


def test_two_processes_writing_the_same_study_leave_one_set(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    upgrade(engine)
    model_id, studies = new_run(engine, "run-a")
    engine.dispose()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_writer, args=(postgres_url, studies["s1"], model_id, barrier, 15))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    engine = make_engine(postgres_url)
    assert counts(engine) == (2, 6, 2)
    engine.dispose()


@pytest.mark.parametrize(
    ("structure", "values", "message"),
    [
        ("LV", metric_values(1.2), r"dice = 1.2 is outside \[0, 1\]"),
        ("LV", metric_values(-0.1), r"dice = -0.1 is outside \[0, 1\]"),
        ("LV", metric_values(math.nan), "dice is NaN but the masks are not empty"),
        ("LA", metric_values(0.9), "unknown structure 'LA'"),
        ("RV", {**metric_values(0.9), "vol_pred_ml": -3.0}, "vol_pred_ml = -3.0 is negative"),
        ("RV", {**metric_values(0.9), "fp": -1}, "negative voxel counts"),
    ],
)
def test_bad_metric_values_are_refused(postgres_url: str, structure: str, values: dict, message: str) -> None:
    engine = make_engine(postgres_url)
    upgrade(engine)
    model_id, studies = new_run(engine, "run-a")
    with pytest.raises(RecordError, match=message), session_scope(engine) as session:
        record_metrics(session, study_id=studies["s1"], model_id=model_id, frame=1, phase=Phase.ED,
                       metrics={"RV": metric_values(0.8), structure: values})
    assert counts(engine) == (0, 0, 0)  # nothing of the frame was written
    engine.dispose()


def test_empty_masks_store_null_dice_and_distances(record_url: str) -> None:
    engine = make_engine(record_url)
    upgrade(engine)
    model_id, studies = new_run(engine, "run-a")
    both_empty = {"dice": math.nan, "iou": math.nan, "tp": 0, "fp": 0, "fn": 0, "hd95_mm": math.nan,
                  "assd_mm": math.nan, "vol_pred_ml": 0.0, "vol_ref_ml": 0.0}
    one_empty = {**both_empty, "dice": 0.0, "iou": 0.0, "fn": 40, "hd95_mm": math.inf, "assd_mm": math.inf,
                 "vol_ref_ml": 2.0}
    with session_scope(engine) as session:
        record_metrics(session, study_id=studies["s1"], model_id=model_id, frame=1, phase=Phase.ED,
                       metrics={"RV": both_empty, "LV": one_empty})
    with session_scope(engine) as session:
        rows = dict(session.execute(select(Metric.structure, Metric.dice)).all())
        assert rows == {"RV": None, "LV": 0.0}
        assert session.execute(select(Metric.hd95_mm).where(Metric.structure == "LV")).scalar_one() is None
    engine.dispose()


def test_the_database_itself_refuses_bad_rows(postgres_url: str) -> None:
    """The CHECK constraints hold even for writes that bypass HeartSeg's validation."""
    engine = make_engine(postgres_url)
    upgrade(engine)
    model_id, studies = new_run(engine, "run-a")
    insert = text(
        "INSERT INTO metrics (study_id, model_id, frame, phase, structure, dice, iou, tp, fp, fn, vol_pred_ml,"
        " vol_ref_ml) VALUES (:s, :m, 1, 'ED', :structure, :dice, 0.5, 1, 1, 1, 1.0, :vol)"
    )
    for structure, dice, vol in (("LV", 1.5, 1.0), ("XX", 0.5, 1.0), ("LV", 0.5, -1.0), ("LV", None, 1.0)):
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert, {"s": studies["s1"], "m": model_id, "structure": structure, "dice": dice,
                                        "vol": vol})
    with session_scope(engine) as session:
        assert session.execute(select(func.count()).select_from(Run)).scalar_one() == 1
    engine.dispose()
