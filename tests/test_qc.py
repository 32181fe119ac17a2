"""QC flags: each check on label maps of known geometry, and through the real stages and the record.

A phantom segmented by the Oracle (its own reference) gets no flag; the same phantom with its
predicted labels damaged on purpose (an island far away, a structure missing on a mid-ventricular
slice, a hole in the myocardium) gets the matching flag, read back from view ``run_qc`` and table
``qc_flags`` on PostgreSQL and SQLite; a segmenter that hands over quality signals (uncertainty, predicted
Dice) gets them recorded in ``masks`` and ``frame_quality`` and flagged.

Length: the flags' tests share the phantom frames and the record fixtures built at the top.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, func, select

from db.queries import RUN_QC_COLUMNS, run_qc
from db.records import RecordError
from db.schema import FrameQualityRow, Mask, QualityFlag
from db.session import open_record, session_scope
from db.writes import record_frame_quality, record_qc_flags
from heartseg.labels import Phase, Structure
from heartseg.settings import Settings
from heartseg.storage import LocalStore
from scheduler.submit import submit_sources
from tests.phantom_cache import write_cohort
from tests.record_fixtures import new_run
from tests.test_models import fake_model
from tests.test_pipeline_stages import Oracle
from workers import qc
from workers.pipeline import ModelInfo, OnLabels, evaluate_stage, quality_rows, segment_stage
from workers.quality import FrameQuality, StructureQuality
from workers.stage_context import StageContext

RV, MYO, LV = Structure.RV.label, Structure.MYO.label, Structure.LV.label
SPACING = (1.5, 1.5, 10.0)
VOXEL_ML = 1.5 * 1.5 * 10.0 / 1000


def heart(shape: tuple[int, int, int] = (80, 80, 12), slices: range = range(2, 10)) -> np.ndarray:
    """A cylinder heart on ``slices``: LV cavity disc (radius 8 px) at (40, 40), myocardium ring to radius 12,
    RV a crescent (disc of radius 12 at (40, 58) minus the LV epicardial disc)."""
    x, y = np.mgrid[: shape[0], : shape[1]]
    lv = (x - 40) ** 2 + (y - 40) ** 2 < 8**2
    epi = (x - 40) ** 2 + (y - 40) ** 2 < 12**2
    rv = ((x - 40) ** 2 + (y - 58) ** 2 < 12**2) & ~epi
    labels = np.zeros(shape, np.uint8)
    for z in slices:
        labels[rv, z] = RV
        labels[epi, z] = MYO
        labels[lv, z] = LV
    return labels


def names(flags: Sequence[qc.QcFlag]) -> list[tuple[str, str | None]]:
    return [(f.flag.value, None if f.structure is None else f.structure.value) for f in flags]


# --- each check on known geometry ---


def test_a_clean_heart_has_no_flag() -> None:
    assert qc.frame_flags(heart(), SPACING, 1) == []


def test_mid_ventricular_slices_are_the_middle_third_of_the_labelled_ones() -> None:
    labels = heart(slices=range(2, 10))  # 8 labelled slices: 2 dropped at each end
    assert list(qc.labelled_slices(labels)) == list(range(2, 10))
    assert qc.mid_ventricular_slices(labels) == range(4, 8)
    assert qc.mid_ventricular_slices(np.zeros((4, 4, 3), np.uint8)) == range(0)


def test_a_structure_missing_from_the_frame() -> None:
    labels = heart()
    labels[labels == RV] = 0
    flags = qc.missing_flags(labels, 3)
    assert names(flags) == [("missing_structure", "RV")]
    assert (flags[0].frame, flags[0].value, flags[0].severity) == (3, 0.0, qc.ERROR)
    assert flags[0].reason.startswith("frame 3: RV missing")


def test_a_structure_missing_on_a_mid_ventricular_slice() -> None:
    labels = heart()
    labels[:, :, 5][labels[:, :, 5] == LV] = 0  # the ring and the RV stay: a gap in the LV cavity
    flags = qc.missing_flags(labels, 1)
    assert names(flags) == [("missing_on_slice", "LV")]
    assert flags[0].value == 1.0 and "slice 6" in flags[0].reason  # slices are named 1-based


def test_a_structure_that_ends_early_is_not_missing() -> None:
    labels = heart()
    for z in (6, 7, 8, 9):  # the RV ends before the LV, as towards the apex: no gap
        labels[:, :, z][labels[:, :, z] == RV] = 0
    assert qc.missing_flags(labels) == []


def test_pieces_volume_and_distance_from_the_heart_centre() -> None:
    labels = heart()
    centre = np.argwhere(labels > 0).mean(axis=0) * SPACING
    labels[2:6, 2:6, 5] = MYO  # an island of 16 voxels in a corner
    island = np.array([3.5, 3.5, 5.0]) * SPACING
    expected = float(np.linalg.norm(island - centre))
    assert np.allclose(qc.heart_centre_mm(labels, SPACING), centre)
    pieces = qc.structure_pieces(labels, SPACING, Structure.MYO)
    assert pieces.n == 2
    assert pieces.outside_largest_ml == pytest.approx(16 * VOXEL_ML)
    assert pieces.farthest_mm == pytest.approx(expected)
    assert qc.structure_pieces(labels, SPACING, Structure.LV).n == 1

    flags = qc.piece_flags(labels, SPACING, 1, max_piece_ml=5.0, max_piece_distance_mm=40.0)
    assert names(flags) == [("far_piece", "MYO")] and flags[0].value == pytest.approx(expected)
    assert flags[0].threshold == 40.0 and flags[0].severity == qc.WARNING
    assert "MYO in 2 pieces" in flags[0].reason
    flags = qc.piece_flags(labels, SPACING, 1, max_piece_ml=0.1, max_piece_distance_mm=expected + 1)
    assert names(flags) == [("pieces", "MYO")] and flags[0].value == pytest.approx(16 * VOXEL_ML)


def test_pieces_connect_across_slices_diagonally() -> None:
    labels = np.zeros((10, 10, 4), np.uint8)
    labels[2, 2, 1] = LV
    labels[3, 3, 2] = LV  # touches the first one at a corner, one slice down: 26-connected
    assert qc.structure_pieces(labels, SPACING, Structure.LV).n == 1


def test_labels_on_both_end_slices() -> None:
    based = heart(slices=range(0, 8))  # the heart starts on the first slice at full size, as a base does
    assert qc.edge_area_fractions(based) == (1.0, 0.0)
    assert qc.edge_slice_flags(based, 2, max_edge_area_fraction=0.5) == []  # the basal end alone is usual
    cut = heart(slices=range(0, 12))  # full size on both end slices: the apex is cut off too
    flags = qc.edge_slice_flags(cut, 2, max_edge_area_fraction=0.5)
    assert names(flags) == [("edge_slice", None)] and flags[0].value == 1.0
    assert "both end slices" in flags[0].reason and "(1 of 12)" in flags[0].reason
    assert qc.edge_slice_flags(cut, 2, max_edge_area_fraction=1.0) == []
    assert qc.edge_slice_flags(heart(), 2) == []


def test_lv_not_enclosed_by_myocardium() -> None:
    labels = heart()
    assert qc.enclosed_fractions(labels) == dict.fromkeys(range(4, 8), 1.0)
    labels[41:, :, 6][labels[41:, :, 6] == MYO] = 0  # half of the ring gone on one mid slice
    fractions = qc.enclosed_fractions(labels)
    assert fractions[5] == 1.0 and 0.4 < fractions[6] < 0.6
    flags = qc.enclosure_flags(labels, 4, min_enclosed_fraction=0.8)
    assert names(flags) == [("lv_not_enclosed", "LV")]
    assert flags[0].value == pytest.approx(fractions[6]) and "slice 7" in flags[0].reason
    labels[:, :, 2][labels[:, :, 2] == MYO] = 0  # a basal slice is not checked
    assert names(qc.enclosure_flags(labels, 4)) == [("lv_not_enclosed", "LV")]


def test_uncertain_frames() -> None:
    assert names(qc.uncertainty_flags(0.5, 7, max_uncertainty=0.3)) == [("uncertain", None)]
    assert qc.uncertainty_flags(0.2, 7, max_uncertainty=0.3) == []
    assert qc.uncertainty_flags(None, 7) == [] and qc.uncertainty_flags(math.nan, 7) == []
    flags = qc.frame_flags(heart(), SPACING, 7, qc.QcThresholds(max_uncertainty=0.1), uncertainty=0.25)
    assert names(flags) == [("uncertain", None)] and flags[0].value == 0.25


def test_low_predicted_dice() -> None:
    predicted = {Structure.RV: 0.62, Structure.MYO: 0.8, Structure.LV: None}
    flags = qc.predicted_dice_flags(predicted, 5, Phase.ES, min_predicted_dice=0.8)
    assert names(flags) == [("low_predicted_dice", "RV")]  # 0.8 is not below 0.8; None is unknown
    assert (flags[0].frame, flags[0].value, flags[0].threshold, flags[0].severity) == (5, 0.62, 0.8, qc.ERROR)
    assert flags[0].reason == "ES RV: predicted Dice 0.62 (below 0.8)"
    assert qc.predicted_dice_flags(predicted, 7, Phase.OTHER)[0].reason == "frame 7 RV: predicted Dice 0.62 (below 0.8)"
    assert qc.predicted_dice_flags(None, 5) == [] and qc.predicted_dice_flags({Structure.LV: math.nan}, 5) == []
    assert qc.predicted_dice_flags(predicted, 5, min_predicted_dice=0.5) == []
    flags = qc.study_flags({1: heart(), 5: heart()}, SPACING, predicted_dice={5: predicted},
                           phases={1: Phase.ED, 5: Phase.ES})
    assert [(f.flag.value, f.frame) for f in flags] == [("low_predicted_dice", 5)]


def _indices(**changes: float | None) -> dict[str, float | None]:
    values: dict[str, float | None] = {
        "lv_edv_ml": 150.0, "lv_esv_ml": 60.0, "lv_ef_pct": 60.0, "rv_edv_ml": 160.0, "rv_esv_ml": 70.0,
        "rv_ef_pct": 56.25, "myo_mass_g": 120.0, "bsa_m2": None, "lv_edv_index_ml_m2": None,
        "rv_edv_index_ml_m2": None, "myo_mass_index_g_m2": None}
    values.update(changes)
    return values


def test_index_flags() -> None:
    assert qc.index_flags(_indices()) == []
    flags = qc.index_flags(_indices(lv_esv_ml=160.0, lv_ef_pct=-6.7))
    assert names(flags) == [("esv_ge_edv", "LV"), ("implausible_index", "LV")]
    assert (flags[0].value, flags[0].threshold, flags[0].frame) == (160.0, 150.0, None)
    assert flags[1].threshold == 1.0 and "LVEF -6.7 %" in flags[1].reason
    # absolute without BSA, indexed with it: a large heart in a large body is plausible
    assert names(qc.index_flags(_indices(lv_edv_ml=800.0))) == [("implausible_index", "LV")]
    big_body = _indices(lv_edv_ml=800.0, bsa_m2=2.6, lv_edv_index_ml_m2=307.7, rv_edv_index_ml_m2=61.5,
                        myo_mass_index_g_m2=46.2)
    assert qc.index_flags(big_body) == []
    assert names(qc.index_flags({**big_body, "myo_mass_index_g_m2": 260.0})) == [("implausible_index", "MYO")]


def test_every_limit_is_cited_and_ordered() -> None:
    assert "Kawel-Boehm" in (qc.__doc__ or "") + Path(qc.__file__).read_text()
    for limits in (*qc.INDEX_LIMITS, *qc.ABSOLUTE_LIMITS, *qc.INDEXED_LIMITS):
        assert limits.low < limits.high


def test_thresholds_come_from_the_settings() -> None:
    settings = Settings(qc_max_piece_ml=2.0, qc_max_piece_distance_mm=50.0, qc_max_edge_area_fraction=0.9,
                        qc_min_enclosed_fraction=0.7, qc_max_uncertainty=0.2, qc_min_predicted_dice=0.6)
    assert qc.QcThresholds.from_settings(settings) == qc.QcThresholds(2.0, 50.0, 0.9, 0.7, 0.2, 0.6)
    assert qc.QcThresholds().min_predicted_dice == Settings().qc_min_predicted_dice == 0.8
    assert qc.QcThresholds.from_settings(Settings()) == qc.QcThresholds()


def test_recorded_flags_are_replaced_and_validated(sqlite_url: str) -> None:
    engine = open_record(sqlite_url)
    model_id, studies = new_run(engine, "r", sources=["s1", "s2"])
    flag = qc.QcFlag(qc.Flag.PIECES, 1, Structure.MYO, 6.0, 5.0, qc.WARNING, "frame 1: MYO in 2 pieces").as_row()
    with session_scope(engine) as session:
        assert record_qc_flags(session, study_id=studies["s1"], model_id=model_id, flags=[flag, flag]) == 2
    with session_scope(engine) as session:  # a re-delivered evaluation: replaced, not added
        assert record_qc_flags(session, study_id=studies["s1"], model_id=model_id, flags=[flag]) == 1
    for bad in ({**flag, "severity": 3}, {**flag, "structure": "LA"}, {**flag, "value": math.nan},
                {**flag, "flag": "x" * 33}, {**flag, "reason": " "}):
        with pytest.raises(RecordError), session_scope(engine) as session:
            record_qc_flags(session, study_id=studies["s1"], model_id=model_id, flags=[bad])
    rows = {r["patient_id"]: r for r in run_qc(engine, "r")}
    assert [r["patient_id"] for r in run_qc(engine, "r")] == ["s1", "s2"]
    assert (rows["s1"]["n_flags"], rows["s1"]["severity"], rows["s1"]["flags"]) == (1, 1, "frame 1: MYO in 2 pieces")
    assert (rows["s2"]["n_flags"], rows["s2"]["severity"], rows["s2"]["flags"]) == (0, 0, "")
    engine.dispose()


# --- through the stages and the record ---


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One phantom patient; and beside it a copy without its reference labels."""
    root = tmp_path_factory.mktemp("qc")
    write_cohort(root / "cohort", 1, seed=3)
    folder = root / "cohort" / "phantom001"
    bare = root / "bare" / "phantom001"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns("*_gt.nii.gz"))
    return folder


def _mid_slice(labels: np.ndarray) -> int:
    present = qc.labelled_slices(labels)
    return int(present[0] + present[-1]) // 2


def island(labels: np.ndarray) -> np.ndarray:
    labels[1:5, 1:5, _mid_slice(labels)] = MYO  # in the corner of the field of view, far from the heart
    return labels


def gap(labels: np.ndarray) -> np.ndarray:
    z = _mid_slice(labels)
    labels[:, :, z][labels[:, :, z] == LV] = 0  # the LV cavity missing on one mid-ventricular slice
    return labels


def hole(labels: np.ndarray) -> np.ndarray:
    z = _mid_slice(labels)
    cx = int(np.argwhere(labels[:, :, z] == LV)[:, 0].mean())
    labels[cx:, :, z][labels[cx:, :, z] == MYO] = 0  # half of the myocardial ring gone on that slice
    return labels


class DamagingOracle(Oracle):
    """The Oracle, with its labels damaged by ``damage`` (on a copy)."""

    def __init__(self, folders: list[Path], damage: Callable[[np.ndarray], np.ndarray]) -> None:
        super().__init__(folders)
        self.damage = damage

    def __call__(self, image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        return self.damage(super().__call__(image, spacing).copy())


#: What :class:`UncertainOracle` says of every frame: an uncertainty of 0.5 and, from two folds, an RV predicted
#: below the default threshold (0.8), the MYO and LV above it.
QUALITY = FrameQuality(uncertainty=0.5, n_folds=2, structures=(
    StructureQuality(Structure.RV, (0.7, 0.6), (0.2, None), 0.75, 40.0, 0.62),
    StructureQuality(Structure.MYO, (0.9, 0.8), (0.1, 0.3), 0.9, 60.0, 0.85),
    StructureQuality(Structure.LV, (0.95, 0.95), (0.05, 0.05), None, 70.0, 0.93),
))


class UncertainOracle(Oracle):
    """The Oracle as a pipelined segmenter that hands every frame's labels over with :data:`QUALITY`."""

    def segment_frames(self, images: Iterable[np.ndarray], spacing: Sequence[float],
                       on_labels: OnLabels) -> list[np.ndarray]:
        results = []
        for index, image in enumerate(images):
            results.append(self(image, spacing))
            on_labels(index, results[-1], QUALITY)
        return results


def _run(engine: Engine, tmp_path: Path, name: str, source: Path, segment: Callable[..., np.ndarray]) -> int:
    model_dir = next((tmp_path / "models").glob("*/*"), None) or fake_model(tmp_path / "models")
    settings = Settings(trusted_model_roots=[tmp_path / "models"])
    submission = submit_sources(engine, settings, name=name, source_uri=str(source.parent), sources=[str(source)],
                                model_dir=model_dir, force=True)
    (study_id,) = submission.study_ids
    ctx = StageContext(engine, LocalStore(tmp_path / "results"), settings)
    frames = segment.segment_frames if isinstance(segment, UncertainOracle) else None
    assert segment_stage(ctx, study_id, ModelInfo(submission.fingerprint, segment, frames), worker="test")
    evaluate_stage(ctx, study_id)
    return study_id


def test_flags_through_the_stages(record_url: str, phantom: Path, tmp_path: Path) -> None:
    engine = open_record(record_url)
    bare = phantom.parent.parent / "bare" / phantom.name
    runs = {"clean": (phantom, Oracle([phantom])), "island": (phantom, DamagingOracle([phantom], island)),
            "gap": (bare, DamagingOracle([phantom], gap)), "hole": (phantom, DamagingOracle([phantom], hole)),
            "uncertain": (phantom, UncertainOracle([phantom]))}
    study_ids = {run: _run(engine, tmp_path, run, source, segment) for run, (source, segment) in runs.items()}

    rows = {run: run_qc(engine, run) for run in runs}
    assert all(len(r) == 1 and tuple(r[0]) == RUN_QC_COLUMNS for r in rows.values())
    clean = rows["clean"][0]
    assert (clean["patient_id"], clean["status"], clean["n_flags"], clean["severity"], clean["flags"]) \
        == ("phantom001", "done", 0, 0, "")
    with session_scope(engine) as session:
        flags = {run: sorted((f.flag, f.structure, f.frame) for f in session.execute(
            select(QualityFlag).where(QualityFlag.study_id == study_id)).scalars())
            for run, study_id in study_ids.items()}
        uncertainty = dict(session.execute(select(Mask.study_id, func.max(Mask.uncertainty)).group_by(Mask.study_id))
                           .all())
    assert uncertainty == {i: 0.5 if run == "uncertain" else None for run, i in study_ids.items()}
    ed, es = sorted({frame for run in flags.values() for _, _, frame in run})
    with session_scope(engine) as session:
        quality = [(r.study_id, r.frame, r.phase, r.structure, r.predicted_dice, r.self_dice, r.entropy,
                    r.fold_agreement, r.n_folds, r.volume_ml) for r in session.execute(
            select(FrameQualityRow).order_by(FrameQualityRow.frame, FrameQualityRow.id)).scalars()]
    # one row per frame and structure, of the run whose segmenter measured them only: the folds' means
    uncertain = study_ids["uncertain"]
    assert [row[:4] for row in quality] == [(uncertain, frame, phase, s) for frame, phase in ((ed, Phase.ED),
                                                                                            (es, Phase.ES))
                                            for s in (Structure.RV, Structure.MYO, Structure.LV)]
    assert [row[4:] for row in quality[:3]] == [
        (0.62, pytest.approx(0.65), 0.2, 0.75, 2, 40.0), (0.85, pytest.approx(0.85), pytest.approx(0.2), 0.9, 2, 60.0),
        (0.93, 0.95, pytest.approx(0.05), None, 2, 70.0)]
    assert flags["island"] == [("far_piece", Structure.MYO, ed), ("far_piece", Structure.MYO, es)]
    # the cavity cut in two by the gap is also in two pieces, each of several ml
    assert [f for f in flags["gap"] if f[0] != "pieces"] == [("missing_on_slice", Structure.LV, ed),
                                                             ("missing_on_slice", Structure.LV, es)]
    assert {f[:2] for f in flags["gap"] if f[0] == "pieces"} <= {("pieces", Structure.LV)}
    assert flags["hole"] == [("lv_not_enclosed", Structure.LV, ed), ("lv_not_enclosed", Structure.LV, es)]
    assert flags["uncertain"] == [("low_predicted_dice", Structure.RV, ed), ("low_predicted_dice", Structure.RV, es),
                                  ("uncertain", None, ed), ("uncertain", None, es)]
    assert rows["uncertain"][0]["severity"] == 2 * qc.WARNING + 2 * qc.ERROR
    assert rows["uncertain"][0]["flags"].startswith("ED RV: predicted Dice 0.62 (below 0.8); ES RV: predicted Dice")
    for run, text in (("island", "MYO in 2 pieces"), ("gap", "LV missing on mid-ventricular slice"),
                      ("hole", "LV cavity not enclosed by myocardium")):
        row = rows[run][0]
        with session_scope(engine) as session:
            severities = session.execute(select(QualityFlag.severity)
                                         .where(QualityFlag.study_id == study_ids[run])).scalars().all()
        assert (row["n_flags"], row["severity"]) == (len(flags[run]), sum(severities))
        assert row["flags"].count(text) == 2 and row["flags"].count("; ") == len(flags[run]) - 1
        assert row["flags"].startswith(f"frame {ed}: ")  # the most severe first, then by frame

    # the same query on the view, across runs, worst first
    with engine.connect() as connection:
        from sqlalchemy import text as sql

        worst = connection.execute(sql("SELECT run, severity FROM run_qc ORDER BY severity DESC, run")).all()
    severity = dict(tuple(r) for r in worst)
    assert [s for _, s in worst] == sorted(severity.values(), reverse=True)
    assert {k: v for k, v in severity.items() if k != "gap"} == {"uncertain": 6, "hole": 4, "island": 2, "clean": 0}
    assert severity["gap"] >= 4

    # evaluated again (a re-delivered task): the flags are replaced, not doubled
    settings = Settings(trusted_model_roots=[tmp_path / "models"])
    evaluate_stage(StageContext(engine, LocalStore(tmp_path / "results"), settings), study_ids["hole"])
    assert run_qc(engine, "hole")[0]["n_flags"] == 2
    # with a lower threshold, the RV at 0.62 is no longer flagged
    lenient = Settings(trusted_model_roots=[tmp_path / "models"], qc_min_predicted_dice=0.6)
    evaluate_stage(StageContext(engine, LocalStore(tmp_path / "results"), lenient), uncertain)
    assert run_qc(engine, "uncertain")[0]["n_flags"] == 2
    engine.dispose()


def test_recorded_frame_quality_is_upserted_replaced_and_validated(record_url: str) -> None:
    engine = open_record(record_url)
    model_id, studies = new_run(engine, "r", sources=["s1"])
    study_id = studies["s1"]
    rows = quality_rows(QUALITY)

    def recorded() -> list[tuple[int, Structure, float | None]]:
        with session_scope(engine) as session:
            return [(frame, structure, dice) for frame, structure, dice in session.execute(
                select(FrameQualityRow.frame, FrameQualityRow.structure, FrameQualityRow.predicted_dice)
                .order_by(FrameQualityRow.frame, FrameQualityRow.structure))]

    for _ in range(2):  # a re-delivered segmentation: one row per frame and structure
        with session_scope(engine) as session:
            for frame, phase in ((1, Phase.ED), (5, Phase.ES)):
                assert record_frame_quality(session, study_id=study_id, model_id=model_id, frame=frame, phase=phase,
                                            structures=rows) == 3
    assert len(recorded()) == 6
    with session_scope(engine) as session:  # segmented again, measured otherwise: the frame's rows are replaced
        record_frame_quality(session, study_id=study_id, model_id=model_id, frame=1, phase=Phase.ED,
                             structures=[{**rows[2], "predicted_dice": 0.5}])
        record_frame_quality(session, study_id=study_id, model_id=model_id, frame=5, phase=Phase.ES, structures=[])
    assert recorded() == [(1, Structure.LV, 0.5)]
    # a fraction a hair above 1 from floating point is 1; anything else out of range is refused, nothing written
    with session_scope(engine) as session:
        record_frame_quality(session, study_id=study_id, model_id=model_id, frame=1, phase=Phase.ED,
                             structures=[{**rows[2], "self_dice": 1 + 1e-9}])
        assert session.execute(select(FrameQualityRow.self_dice)).scalar_one() == 1.0
    for bad in ({"predicted_dice": 1.2}, {"self_dice": None}, {"entropy": math.nan}, {"fold_agreement": -0.1},
                {"n_folds": 0}, {"volume_ml": -1.0}, {"structure": "LA"}):
        with pytest.raises(RecordError), session_scope(engine) as session:
            record_frame_quality(session, study_id=study_id, model_id=model_id, frame=1, phase=Phase.ED,
                                 structures=[rows[0], {**rows[2], **bad}])
    with pytest.raises(RecordError, match="more than once"), session_scope(engine) as session:
        record_frame_quality(session, study_id=study_id, model_id=model_id, frame=1, phase=Phase.ED,
                             structures=[rows[2], rows[2]])
    assert recorded() == [(1, Structure.LV, 0.93)]  # the last good write's
    engine.dispose()
