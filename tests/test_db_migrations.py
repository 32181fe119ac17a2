"""Migrations go from empty to head and back, on PostgreSQL and SQLite, and match the models."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import IntegrityError

from db.migrate import check, downgrade, upgrade
from db.schema import CardiacIndex, Run, Study
from db.session import make_engine, session_scope
from heartseg.enums import Frames, PhaseSource

TABLES = {"models", "runs", "studies", "masks", "metrics", "cardiac_indices"}
VIEWS = {"cohort_metric_stats", "run_index_agreement", "run_status_counts", "run_failures", "run_dice_comparison",
         "run_qc"}
#: The views of revision 0002 (the only ones at 0003).
VIEWS_AT_0003 = VIEWS - {"run_qc"}


def test_upgrade_downgrade_upgrade(record_url: str) -> None:
    engine = make_engine(record_url)
    try:
        upgrade(engine)
        inspector = inspect(engine)
        assert set(inspector.get_table_names()) >= TABLES | {"qc_flags", "workers", "frame_quality"}
        assert set(inspector.get_view_names()) == VIEWS
        check(engine)  # the ORM models and the migrations agree (alembic check)
        downgrade(engine)
        inspector = inspect(engine)
        assert set(inspector.get_table_names()) <= {"alembic_version"}
        assert inspector.get_view_names() == []
        upgrade(engine)
        assert set(inspect(engine).get_view_names()) == VIEWS
    finally:
        engine.dispose()


ROWS_AT_0003 = (
    "INSERT INTO models (id, fingerprint, path, folds, checkpoint_name, use_mirroring, tile_step_size)"
    " VALUES (1, 'f', '/m', '0', 'checkpoint_final.pth', false, 0.5)",
    "INSERT INTO runs (id, name, source_uri, model_id, frames) VALUES (1, 'run-a', '/d', 1, 'all')",
    "INSERT INTO studies (id, run_id, source_uri, patient_id, status, attempts, phase_source)"
    " VALUES (1, 1, '/d/p1', 'p1', 'done', 0, 'lv_volume')",
    "INSERT INTO masks (study_id, model_id, frame, phase, uri, sha256, shape, spacing_x_mm, spacing_y_mm,"
    " spacing_z_mm) VALUES (1, 1, 1, 'ED', '/m/1.nii.gz', 'x', '2,2,1', 1, 1, 1)",
    "INSERT INTO metrics (study_id, model_id, frame, phase, structure, dice, iou, tp, fp, fn, vol_pred_ml,"
    " vol_ref_ml) VALUES (1, 1, 1, 'ED', 'LV', 0.5, 0.33, 1, 1, 1, 1, 1)",
    "INSERT INTO cardiac_indices (study_id, model_id, source, ed_frame, es_frame, phase_source, lv_edv_ml,"
    " lv_esv_ml, lv_sv_ml, rv_edv_ml, rv_esv_ml, rv_sv_ml, myo_mass_g) VALUES (1, 1, 'pred', 1, 2, 'stated',"
    " 1, 1, 0, 1, 1, 0, 1)",
)


def _row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {t: connection.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in sorted(TABLES)}


def _one_row_each_at_0003(engine: Engine) -> None:
    """The record at revision 0003 with one row in every table (``ROWS_AT_0003``)."""
    upgrade(engine, "0003")
    with engine.begin() as connection:
        for insert in ROWS_AT_0003:
            connection.execute(text(insert))


def test_recorded_rows_survive_the_enum_columns_migration(record_url: str) -> None:
    """0004 alters tables that others reference (SQLite recreates them): no row is lost either way."""
    engine = make_engine(record_url)
    try:
        _one_row_each_at_0003(engine)
        every_table_one_row = dict.fromkeys(sorted(TABLES), 1)
        assert _row_counts(engine) == every_table_one_row
        upgrade(engine)
        assert _row_counts(engine) == every_table_one_row
        assert set(inspect(engine).get_view_names()) == VIEWS
        with session_scope(engine) as session:
            assert session.execute(select(Run.frames)).scalar_one() is Frames.ALL
            assert session.execute(select(Study.phase_source)).scalar_one() is PhaseSource.LV_VOLUME
            assert session.execute(select(CardiacIndex.phase_source)).scalar_one() is PhaseSource.STATED
        with engine.connect() as connection:
            assert connection.execute(text("SELECT run, status, n_studies FROM run_status_counts")).all() \
                == [("run-a", "done", 1)]
        downgrade(engine, "0003")
        assert _row_counts(engine) == every_table_one_row
        assert set(inspect(engine).get_view_names()) == VIEWS_AT_0003
    finally:
        engine.dispose()


FRAME_QUALITY_ROW = (
    "INSERT INTO frame_quality (study_id, model_id, frame, phase, structure, predicted_dice, self_dice, entropy,"
    " fold_agreement, n_folds, volume_ml) VALUES (1, 1, 1, 'ED', 'LV', {dice}, 0.9, NULL, NULL, 1, 80)"
)


def test_frame_quality_is_added_and_removed_with_the_rows_kept(record_url: str) -> None:
    """0008 adds ``frame_quality`` beside the rows of 0007 (its checks hold on both databases); its downgrade
    removes it and keeps them."""
    engine = make_engine(record_url)
    try:
        upgrade(engine, "0003")
        with engine.begin() as connection:
            for insert in ROWS_AT_0003:
                connection.execute(text(insert))
        upgrade(engine, "0007")
        assert "frame_quality" not in inspect(engine).get_table_names()
        upgrade(engine, "0008")
        with engine.begin() as connection:
            connection.execute(text(FRAME_QUALITY_ROW.format(dice="0.7")))
        for dice in ("1.5", "-0.1"):
            with pytest.raises(IntegrityError), engine.begin() as connection:
                connection.execute(text(FRAME_QUALITY_ROW.format(dice=dice).replace("'LV'", "'RV'")))
        with pytest.raises(IntegrityError), engine.begin() as connection:  # one row per study, model, frame, structure
            connection.execute(text(FRAME_QUALITY_ROW.format(dice="0.8")))
        with engine.connect() as connection:
            assert connection.execute(text("SELECT structure, predicted_dice FROM frame_quality")).all() \
                == [("LV", 0.7)]
        downgrade(engine, "0007")
        assert "frame_quality" not in inspect(engine).get_table_names()
        assert _row_counts(engine) == dict.fromkeys(sorted(TABLES), 1)
        assert set(inspect(engine).get_view_names()) == VIEWS
    finally:
        engine.dispose()


#: Revision 0009's indexes, and the ones they replace: ``{table: names}``.
INDEXES_OF_0009 = {"studies": {"ix_studies_run_id_status"}, "qc_flags": {"ix_qc_flags_study_id_model_id"}}
REPLACED_BY_0009 = {"studies": {"ix_studies_run_id"}, "qc_flags": {"ix_qc_flags_study_id"}}


def _index_names(engine: Engine, table: str) -> set[str]:
    return {index["name"] for index in inspect(engine).get_indexes(table) if index["name"]}


def test_cohort_indexes_and_views_of_0009(record_url: str) -> None:
    """0009 adds the cohort indexes in place of the ones they extend (and back on downgrade), on both databases;
    the views it rewrites on PostgreSQL answer as before."""
    engine = make_engine(record_url)
    try:
        _one_row_each_at_0003(engine)
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO metrics (study_id, model_id, frame, phase, structure, dice, iou, tp,"
                                    " fp, fn, hd95_mm, vol_pred_ml, vol_ref_ml) VALUES (1, 1, 2, 'ES', 'LV', 0.8,"
                                    " 0.66, 4, 1, 1, 3.0, 1, 1)"))
        upgrade(engine, "0008")
        views = ("SELECT structure, measure, n, mean, sd, median FROM cohort_metric_stats ORDER BY measure",
                 "SELECT run, study_id, n_flags, severity, flags FROM run_qc")
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO qc_flags (study_id, model_id, frame, flag, value, threshold,"
                                    " severity, reason) VALUES (1, 1, NULL, 'a', 1, 2, 1, 'warn'),"
                                    " (1, 1, 1, 'b', 1, 2, 2, 'error')"))
            before = [connection.execute(text(sql)).all() for sql in views]
        for table, names in REPLACED_BY_0009.items():
            assert names <= _index_names(engine, table)
        upgrade(engine)
        for table, names in INDEXES_OF_0009.items():
            assert names <= _index_names(engine, table)
            assert not REPLACED_BY_0009[table] & _index_names(engine, table)
        with engine.connect() as connection:
            after = [connection.execute(text(sql)).all() for sql in views]
        assert after[1] == before[1] == [("run-a", 1, 2, 3, "error; warn")]
        assert [row[:3] for row in after[0]] == [row[:3] for row in before[0]] == [("LV", "dice", 2),
                                                                                   ("LV", "hd95_mm", 1)]
        for got, want in zip(after[0], before[0], strict=True):  # the SD of one value is NULL
            assert [None if v is None else pytest.approx(v, rel=1e-12) for v in want[3:]] == list(got[3:])
        check(engine)
        downgrade(engine, "0008")
        for table, names in INDEXES_OF_0009.items():
            assert not names & _index_names(engine, table)
            assert REPLACED_BY_0009[table] <= _index_names(engine, table)
        with engine.connect() as connection:
            assert [connection.execute(text(sql)).all() for sql in views][1] == before[1]
        assert set(inspect(engine).get_view_names()) == VIEWS
    finally:
        engine.dispose()
