"""A model folder that cannot be loaded fails the studies sent to it, each with the reason, once."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from db.schema import Study
from db.session import open_record, session_scope
from heartseg.enums import StudyStatus
from heartseg.models import ModelError
from heartseg.settings import Settings
from heartseg.storage import LocalStore
from scheduler.submit import submit_sources
from tests.phantom_cache import write_cohort
from tests.test_models import fake_model
from workers.pipeline import refuse_study
from workers.stage_context import StageContext


def test_a_model_whose_checkpoints_are_not_torch_files_fails_each_study_once(tmp_path: Path) -> None:
    from workers.inference.predictor import Segmenter

    model = fake_model(tmp_path / "models")  # its checkpoints hold a few bytes of text
    settings = Settings(trusted_model_roots=[tmp_path / "models"], device="cpu")
    with pytest.raises(ModelError) as refused:
        Segmenter.from_settings(settings, model_dir=model)
    checkpoint = model / "fold_0" / "checkpoint_final.pth"
    assert str(refused.value).startswith(f"{checkpoint}: cannot load the checkpoint (")

    write_cohort(tmp_path / "cohort", 2, seed=2)
    engine = open_record(f"sqlite:///{tmp_path / 'record.db'}")
    submission = submit_sources(engine, settings, name="broken-model", source_uri=str(tmp_path / "cohort"),
                                sources=[str(p) for p in sorted((tmp_path / "cohort").iterdir())], model_dir=model)
    ctx = StageContext(engine, LocalStore(tmp_path / "results"), settings)
    assert [refuse_study(ctx, i, refused.value, worker="w") for i in submission.study_ids] == [True, True]
    assert not refuse_study(ctx, submission.study_ids[0], refused.value, worker="w")  # a second delivery: no-op
    with session_scope(engine) as session:
        rows = session.execute(select(Study.status, Study.error, Study.attempts)).all()
    engine.dispose()
    assert rows == [(StudyStatus.FAILED, str(refused.value), 1)] * 2
