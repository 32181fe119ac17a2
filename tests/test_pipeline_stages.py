"""The two study stages with the record and a results folder, segmenting with an oracle.

The oracle returns each frame's reference labels, so every number the stages record is
known: this checks the plumbing (claim, load, masks in the source geometry, metrics,
indices, failure reasons, idempotency), not a model's accuracy (see test_inference).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import Engine, func, select

from db.schema import CardiacIndex, Mask, Metric, Study
from db.session import open_record, session_scope
from heartseg.enums import StudyStatus
from heartseg.settings import Settings
from heartseg.storage import LocalStore
from heartseg.studies import open_study
from scheduler.submit import Submission, submit_sources
from tests.phantom_cache import write_cohort
from tests.test_models import fake_model
from workers.pipeline import ModelInfo, evaluate_stage, segment_stage
from workers.stage_context import StageContext


class Oracle:
    """Segments a frame by looking up the reference drawn on the same image."""

    def __init__(self, folders: list[Path]) -> None:
        self.references = []
        for folder in folders:
            study = open_study(folder, cine=False)
            self.references += [(f.image, f.reference) for f in study.frames_with_reference()]

    def __call__(self, image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        for known, labels in self.references:
            if known.shape == image.shape and np.array_equal(known, image):
                return labels
        raise AssertionError("the oracle only knows the reference frames")


@pytest.fixture
def cohort(tmp_path: Path) -> list[Path]:
    write_cohort(tmp_path / "cohort", 2, seed=3)
    broken = tmp_path / "cohort" / "phantom003"
    broken.mkdir()
    (broken / "Info.cfg").write_text("ED: 1\nES: 5\nGroup: NOR\nHeight: 170\nNbFrame: 10\nWeight: 70\n")
    (broken / "phantom003_frame01.nii.gz").write_bytes(b"\x1f\x8b\x08\x00corrupt")
    return sorted((tmp_path / "cohort").iterdir())


def one_study(url: str, cohort: list[Path], tmp_path: Path, run: str,
              **settings_values: object) -> tuple[Engine, Settings, Submission]:
    """A record with one run of the cohort's first study, submitted with a fake model."""
    engine = open_record(url)
    model_dir = fake_model(tmp_path / "models")
    settings = Settings(trusted_model_roots=[tmp_path / "models"], **settings_values)
    submission = submit_sources(engine, settings, name=run, source_uri="x", sources=[str(cohort[0])],
                                model_dir=model_dir)
    return engine, settings, submission


def test_stages_record_masks_metrics_and_indices(record_url: str, cohort: list[Path], tmp_path: Path) -> None:
    engine = open_record(record_url)
    model_dir = fake_model(tmp_path / "models")
    settings = Settings(trusted_model_roots=[tmp_path / "models"])
    submission = submit_sources(engine, settings, name="run-1", source_uri=str(tmp_path / "cohort"),
                                sources=[str(f) for f in cohort], model_dir=model_dir)
    assert len(submission.study_ids) == 3
    ctx = StageContext(engine, LocalStore(tmp_path / "results"), settings)
    model = ModelInfo(submission.fingerprint, Oracle(cohort[:2]))
    for study_id in submission.study_ids:
        if segment_stage(ctx, study_id, model, worker="test"):
            evaluate_stage(ctx, study_id)
        # a second delivery of the same message changes nothing
        assert not segment_stage(ctx, study_id, model, worker="test")

    with session_scope(engine) as session:
        studies = {s.patient_id: s for s in session.execute(select(Study)).scalars()}
        assert {p: s.status for p, s in studies.items()} == {
            "phantom001": StudyStatus.DONE, "phantom002": StudyStatus.DONE, "phantom003": StudyStatus.FAILED}
        assert "phantom003_frame01.nii.gz" in studies["phantom003"].error
        assert "corrupt or truncated" in studies["phantom003"].error
        assert studies["phantom001"].pathology_group == "PHANTOM" and studies["phantom001"].attempts == 1
        masks = session.execute(select(Mask)).scalars().all()
        assert len(masks) == 4
        dice = session.execute(select(Metric.dice)).scalars().all()
        assert len(dice) == 12 and all(d == pytest.approx(1.0) for d in dice)
        pairs = session.execute(select(CardiacIndex.source, CardiacIndex.lv_ef_pct)).all()
        assert len(pairs) == 4
        for mask in masks:
            study = studies["phantom001"] if "phantom001" in mask.uri else studies["phantom002"]
            written = nib.load(mask.uri)
            source = nib.load(Path(study.source_uri) / f"{study.patient_id}_frame{mask.frame:02d}.nii.gz")
            assert np.allclose(written.affine, source.affine) and written.shape == source.shape
            assert mask.phase in ("ED", "ES") and submission.fingerprint[:16] in mask.uri
        assert session.execute(select(func.count()).select_from(Metric)).scalar_one() == 12
    engine.dispose()


def test_resubmitting_skips_done_studies_unless_forced(sqlite_url: str, cohort: list[Path], tmp_path: Path) -> None:
    engine = open_record(sqlite_url)
    model_dir = fake_model(tmp_path / "models")
    settings = Settings(trusted_model_roots=[tmp_path / "models"])
    sources = [str(f) for f in cohort[:2]]
    first = submit_sources(engine, settings, name="run-1", source_uri="x", sources=sources, model_dir=model_dir)
    ctx = StageContext(engine, LocalStore(tmp_path / "results"), settings)
    model = ModelInfo(first.fingerprint, Oracle(cohort[:2]))
    for study_id in first.study_ids:
        assert segment_stage(ctx, study_id, model, worker="test")
        evaluate_stage(ctx, study_id)
    again = submit_sources(engine, settings, name="run-2", source_uri="x", sources=sources, model_dir=model_dir)
    assert again.study_ids == [] and again.skipped == sorted(sources)
    forced = submit_sources(engine, settings, name="run-3", source_uri="x", sources=sources, model_dir=model_dir,
                            force=True)
    assert len(forced.study_ids) == 2
    redo = submit_sources(engine, settings, name="run-1", source_uri="x", sources=sources, model_dir=model_dir,
                          force=True)  # the same run again: its done studies are queued to be redone
    assert redo.study_ids == first.study_ids
    with session_scope(engine) as session:
        statuses = session.execute(select(Study.status, Study.attempts).where(Study.id.in_(first.study_ids))).all()
    assert statuses == [(StudyStatus.QUEUED, 0)] * 2
    for study_id in redo.study_ids:
        assert segment_stage(ctx, study_id, model, worker="test")
    again = submit_sources(engine, settings, name="run-1", source_uri="x", sources=sources, model_dir=model_dir)
    assert (again.study_ids, again.in_progress, again.failed) == ([], 2, 0)  # segmented: not sent again
    engine.dispose()


def test_pseudonymized_record_keeps_no_identifier(sqlite_url: str, cohort: list[Path], tmp_path: Path) -> None:
    from heartseg.privacy import pseudonym

    engine = open_record(sqlite_url)
    model_dir = fake_model(tmp_path / "models")
    settings = Settings(trusted_model_roots=[tmp_path / "models"], pseudonymize_key="secret")
    sources = [str(f) for f in cohort[:2]]
    submission = submit_sources(engine, settings, name="anon", source_uri="x", sources=sources, model_dir=model_dir)
    ctx = StageContext(engine, LocalStore(tmp_path / "results"), settings)
    model = ModelInfo(submission.fingerprint, Oracle(cohort[:2]))
    for study_id in submission.study_ids:
        assert segment_stage(ctx, study_id, model, worker="t")
    with session_scope(engine) as session:
        names = sorted(session.execute(select(Study.patient_id)).scalars())
    assert names == sorted(pseudonym(f"phantom00{i}", "secret") for i in (1, 2))
    assert all(n.startswith("anon-") and "phantom" not in n for n in names)
    assert pseudonym("phantom001", "secret") != pseudonym("phantom001", "other")
    engine.dispose()


def test_worker_dying_between_masks_and_evaluation_loses_nothing(sqlite_url: str, cohort: list[Path],
                                                                  tmp_path: Path) -> None:
    """Killed after recording masks but before enqueueing metrics: the lease expires, the study is redone once."""
    import time

    from db.lifecycle import requeue_expired

    engine, settings, submission = one_study(sqlite_url, cohort, tmp_path, "die")
    (study_id,) = submission.study_ids
    store = LocalStore(tmp_path / "results")
    dying = StageContext(engine, store, settings.model_copy(update={"lease_s": 0.5}))
    ctx = StageContext(engine, store, settings)
    model = ModelInfo(submission.fingerprint, Oracle(cohort[:1]))

    def die() -> None:
        raise SystemExit("worker killed")

    with pytest.raises(SystemExit):
        segment_stage(dying, study_id, model, worker="w1", enqueue_evaluation=die)
    with session_scope(engine) as session:
        assert session.execute(select(Study.status)).scalar_one() == StudyStatus.RUNNING  # not stuck as segmented
    time.sleep(0.6)
    with session_scope(engine) as session:
        assert requeue_expired(session) == ([study_id], [])
    evaluated = []
    assert segment_stage(ctx, study_id, model, worker="w2", enqueue_evaluation=lambda: evaluated.append(study_id))
    evaluate_stage(ctx, evaluated[0])
    with session_scope(engine) as session:
        study = session.execute(select(Study)).scalar_one()
        assert (study.status, study.attempts) == (StudyStatus.DONE, 2)
        assert session.execute(select(func.count()).select_from(Mask)).scalar_one() == 2
        assert session.execute(select(func.count()).select_from(Metric)).scalar_one() == 6
    engine.dispose()


def test_a_worker_that_lost_its_lease_writes_nothing_more(sqlite_url: str, cohort: list[Path],
                                                          tmp_path: Path) -> None:
    """While w1 segments, its lease expires and w2 takes the study: w1 stops before recording anything, and w2's
    segmentation is the one recorded."""
    from datetime import timedelta

    from sqlalchemy import update

    from db.lifecycle import claim_study, now

    engine, settings, submission = one_study(sqlite_url, cohort, tmp_path, "lost")
    (study_id,) = submission.study_ids
    ctx = StageContext(engine, LocalStore(tmp_path / "results"), settings)
    oracle = Oracle(cohort[:1])

    def slow_then_overtaken(image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        with session_scope(engine) as session:  # w1 stalled past its lease, and w2 claimed the study
            session.execute(update(Study).where(Study.id == study_id, Study.worker == "w1")
                            .values(lease_expires_at=now() - timedelta(seconds=1)))
            claim_study(session, study_id, "w2", lease_s=60)
        return oracle(image, spacing)

    sent: list[int] = []
    lost = ModelInfo(submission.fingerprint, slow_then_overtaken)
    assert not segment_stage(ctx, study_id, lost, worker="w1", enqueue_evaluation=lambda: sent.append(study_id))
    with session_scope(engine) as session:
        study = session.execute(select(Study)).scalar_one()
        assert (study.status, study.worker, study.attempts) == (StudyStatus.RUNNING, "w2", 2)
        assert session.execute(select(func.count()).select_from(Mask)).scalar_one() == 0
    assert sent == [] and not list((tmp_path / "results").rglob("*.nii.gz"))  # no mask written after the loss
    engine.dispose()


def test_an_unexpected_error_is_a_counted_try_until_the_study_fails(sqlite_url: str, cohort: list[Path],
                                                                    tmp_path: Path) -> None:
    from workers.pipeline import FailedTryError

    engine, settings, submission = one_study(sqlite_url, cohort, tmp_path, "poison", max_attempts=2)
    (study_id,) = submission.study_ids
    ctx = StageContext(engine, LocalStore(tmp_path / "results"), settings)

    def crash(image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        raise ValueError("spacing 0.0001 mm\nis not a spacing")

    poison = ModelInfo(submission.fingerprint, crash)
    statuses = []
    for _ in range(2):
        with pytest.raises(FailedTryError) as failed:
            segment_stage(ctx, study_id, poison, worker="w")
        statuses.append(failed.value.status)
    assert statuses == [StudyStatus.QUEUED, StudyStatus.FAILED]
    with session_scope(engine) as session:
        study = session.execute(select(Study)).scalar_one()
    assert (study.status, study.attempts) == (StudyStatus.FAILED, 2)
    assert study.error == "ValueError: spacing 0.0001 mm is not a spacing (after 2 tries)"
    assert not segment_stage(ctx, study_id, poison, worker="w")  # a late message finds it finished
    engine.dispose()
