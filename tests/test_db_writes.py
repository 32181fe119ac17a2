"""Idempotent writes, concurrency, and refusal of bad values."""

from __future__ import annotations

import math
import multiprocessing

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError, StatementError

from db.migrate import upgrade
from db.records import RecordError
from db.schema import CardiacIndex, Mask, Metric, Model, Run, Study
from db.session import make_engine, session_scope
from db.writes import add_studies, done_source_uris, ensure_run, record_indices, record_mask, record_metrics
from heartseg.enums import Frames, IndexSource, PhaseSource, StudyStatus
from heartseg.labels import Phase, Structure
from tests.record_fixtures import index_values, metric_values, new_run, write_results


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
    write_results(engine, studies["s1"], model_id, dice={Structure.RV: 0.5, Structure.MYO: 0.6, Structure.LV: 0.7})
    assert counts(engine) == (2, 6, 2)
    with session_scope(engine) as session:
        assert session.execute(select(func.count()).select_from(Model)).scalar_one() == 1
        assert session.execute(select(func.count()).select_from(Study)).scalar_one() == 2
        # the later write wins: a retry records the latest result, once
        lv_dice = select(Metric.dice).where(Metric.structure == Structure.LV, Metric.frame == 1)
        assert session.execute(lv_dice).scalar_one() == pytest.approx(0.7)
        with pytest.raises(RecordError, match="already exists with another model"):
            ensure_run(session, name="run-a", source_uri="/x", model_id=model_id + 1, frames=Frames.ED_ES)
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
        session.execute(update(Study).where(Study.id == studies["s1"]).values(status=StudyStatus.DONE))
    with session_scope(engine) as session:
        assert done_source_uris(session, "a" * 64) == {"s1"}
        assert done_source_uris(session, "b" * 64) == set()
    engine.dispose()


def _writer(url: str, study_id: int, model_id: int, barrier: multiprocessing.synchronize.Barrier, loops: int) -> None:
    engine = make_engine(url)
    barrier.wait()
    for i in range(loops):
        write_results(engine, study_id, model_id,
                      dice={Structure.RV: 0.5 + i / 100, Structure.MYO: 0.6, Structure.LV: 0.7})
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
        (Structure.LV, metric_values(1.2), r"dice = 1.2 is outside \[0, 1\]"),
        (Structure.LV, metric_values(-0.1), r"dice = -0.1 is outside \[0, 1\]"),
        (Structure.LV, metric_values(math.nan), "dice is NaN but the masks are not empty"),
        ("LA", metric_values(0.9), "unknown structure 'LA'; expected RV, MYO or LV"),
        (Structure.RV, {**metric_values(0.9), "vol_pred_ml": -3.0}, "vol_pred_ml = -3.0 is negative"),
        (Structure.RV, {**metric_values(0.9), "fp": -1}, "negative voxel counts"),
    ],
)
def test_bad_metric_values_are_refused(postgres_url: str, structure: Structure, values: dict, message: str) -> None:
    engine = make_engine(postgres_url)
    upgrade(engine)
    model_id, studies = new_run(engine, "run-a")
    with pytest.raises(RecordError, match=message), session_scope(engine) as session:
        record_metrics(session, study_id=studies["s1"], model_id=model_id, frame=1, phase=Phase.ED,
                       metrics={Structure.RV: metric_values(0.8), structure: values})
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
                       metrics={Structure.RV: both_empty, Structure.LV: one_empty})
    with session_scope(engine) as session:
        rows = dict(session.execute(select(Metric.structure, Metric.dice)).all())
        assert rows == {Structure.RV: None, Structure.LV: 0.0}
        assert session.execute(select(Metric.hd95_mm).where(Metric.structure == Structure.LV)).scalar_one() is None
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


def test_enum_columns_read_back_as_members(record_url: str) -> None:
    engine = make_engine(record_url)
    upgrade(engine)
    model_id, studies = new_run(engine, "run-a")
    write_results(engine, studies["s1"], model_id)
    with session_scope(engine) as session:
        session.execute(update(Study).where(Study.id == studies["s1"]).values(phase_source=PhaseSource.LV_VOLUME))
    with session_scope(engine) as session:
        assert session.execute(select(Run.frames)).scalar_one() is Frames.ED_ES
        study = session.execute(select(Study)).scalar_one()
        assert (study.status, study.phase_source) == (StudyStatus.QUEUED, PhaseSource.LV_VOLUME)
        assert study.phase_source is PhaseSource.LV_VOLUME and study.status is StudyStatus.QUEUED
        indices = session.execute(select(CardiacIndex.source, CardiacIndex.phase_source)).all()
        assert sorted(indices) == [(IndexSource.PRED, PhaseSource.STATED), (IndexSource.REF, PhaseSource.STATED)]
        assert all(type(s) is IndexSource and type(p) is PhaseSource for s, p in indices)
        assert {type(p) for p in session.execute(select(Mask.phase)).scalars()} == {Phase}
        assert {type(s) for s in session.execute(select(Metric.structure)).scalars()} == {Structure}
    engine.dispose()


def test_values_outside_an_enum_are_refused_before_the_database(record_url: str) -> None:
    engine = make_engine(record_url)
    upgrade(engine)
    model_id, studies = new_run(engine, "run-a")
    with pytest.raises(ValueError, match="'most' is not a valid Frames"):
        Frames("most")
    with pytest.raises(ValueError, match="'guessed' is not a valid PhaseSource"):
        PhaseSource("guessed")
    with session_scope(engine) as session:
        with pytest.raises(RecordError, match="run 'run-b': unknown frames 'most'; expected ed-es or all"):
            ensure_run(session, name="run-b", source_uri="/x", model_id=model_id, frames="most")  # type: ignore[arg-type]
        with pytest.raises(RecordError, match="unknown phase source 'guessed'; expected stated or lv_volume"):
            record_indices(session, study_id=studies["s1"], model_id=model_id, source=IndexSource.PRED,
                           indices={**index_values(120, 50), "phase_source": "guessed"})
        with pytest.raises(RecordError, match="unknown index source 'both'; expected pred or ref"):
            record_indices(session, study_id=studies["s1"], model_id=model_id, source="both",  # type: ignore[arg-type]
                           indices=index_values(120, 50))
        with pytest.raises(RecordError, match="frame 2: unknown phase 'mid'; expected ED, ES or other"):
            record_mask(session, study_id=studies["s1"], model_id=model_id, frame=2, phase="mid",  # type: ignore[arg-type]
                        uri="/m.nii.gz", sha256="0" * 64, shape=(2, 2, 1), spacing=(1.0, 1.0, 1.0))
        # the Enum column type refuses an unknown string before it reaches the database
        with pytest.raises(StatementError, match="'guessed' is not among the defined enum values"):
            session.execute(update(Study).values(phase_source="guessed"))
    with session_scope(engine) as session:
        assert session.execute(select(func.count()).select_from(Run)).scalar_one() == 1
    assert counts(engine) == (0, 0, 0)
    engine.dispose()


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        ("UPDATE runs SET frames = 'most'", "ck_runs_run_frames"),
        ("UPDATE studies SET phase_source = 'guessed'", "ck_studies_phase_source"),
        ("UPDATE cardiac_indices SET phase_source = 'guessed'", "ck_cardiac_indices_phase_source"),
    ],
)
def test_the_database_refuses_values_outside_an_enum(record_url: str, statement: str, constraint: str) -> None:
    """The enum columns' CHECK constraints hold for SQL that bypasses HeartSeg."""
    engine = make_engine(record_url)
    upgrade(engine)
    model_id, studies = new_run(engine, "run-a")
    write_results(engine, studies["s1"], model_id)
    with pytest.raises(IntegrityError, match=constraint), engine.begin() as connection:
        connection.execute(text(statement))
    with session_scope(engine) as session:
        assert session.execute(select(Run.frames)).scalar_one() is Frames.ED_ES
        assert set(session.execute(select(CardiacIndex.phase_source)).scalars()) == {PhaseSource.STATED}
    engine.dispose()
