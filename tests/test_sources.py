"""Storage schemes are plug-ins: a new one is one StudySource subclass, registered by its scheme.

The toy ``mem://`` scheme below keeps a cohort's files in a dict; registered, it runs studies
through discovery, the record and both stages exactly as the built-in schemes do.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from db.schema import Mask, Metric, Study
from db.session import open_record, session_scope
from heartseg.enums import StudyStatus
from heartseg.errors import StudyError
from heartseg.settings import Settings
from heartseg.sources import (
    Discovery,
    Selection,
    StudySource,
    discover_studies,
    register_source,
    scheme_of,
    source_for,
    unregister_source,
)
from heartseg.sources.local import LocalSource
from heartseg.storage import LocalStore
from scheduler.submit import submit_sources
from tests.phantom_cache import write_cohort
from tests.test_models import fake_model
from tests.test_pipeline_stages import Oracle
from workers.pipeline import ModelInfo, evaluate_stage, segment_stage
from workers.stage_context import StageContext


class MemorySource(StudySource):
    """Studies as ``{"mem://cohort/patient/file": bytes}``; a study is fetched by writing its files to a folder."""

    def __init__(self, objects: dict[str, bytes], cache_dir: Path) -> None:
        self.objects = objects
        self.cache_dir = cache_dir
        self.fetched: list[str] = []
        self.released: list[str] = []

    def discover(self, uri: str, selection: Selection) -> Discovery:
        self.check_selection(uri, selection)
        found = sorted({key.rsplit("/", 1)[0] for key in self.objects if key.startswith(uri.rstrip("/") + "/")})
        if not found:
            raise StudyError(uri, "no studies in memory")
        return Discovery(found)

    def _copy(self, source: str) -> Path:
        return self.cache_dir / "mem" / source.removeprefix("mem://")

    def fetch(self, source: str) -> str:
        files = {k.rsplit("/", 1)[1]: v for k, v in self.objects.items() if k.rsplit("/", 1)[0] == source}
        if not files:
            raise StudyError(source, "not in memory")
        folder = self._copy(source)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        self.fetched.append(source)
        return str(folder)

    def release(self, source: str) -> None:
        shutil.rmtree(self._copy(source), ignore_errors=True)
        self.released.append(source)


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[tuple[MemorySource, list[Path]]]:
    """Two phantom patients held in memory under mem://cohort/, registered as the ``mem`` scheme."""
    write_cohort(tmp_path / "phantoms", 2, seed=5)
    folders = sorted((tmp_path / "phantoms").iterdir())
    objects = {f"mem://cohort/{folder.name}/{file.name}": file.read_bytes()
               for folder in folders for file in sorted(folder.iterdir())}
    source = MemorySource(objects, tmp_path / "cache")
    register_source("mem", lambda settings: source)
    try:
        yield source, folders
    finally:
        unregister_source("mem")


def test_a_registered_scheme_runs_studies_through_both_stages(memory: tuple[MemorySource, list[Path]],
                                                              sqlite_url: str, tmp_path: Path) -> None:
    source, folders = memory
    oracle = Oracle(folders)
    for folder in folders:  # the studies now exist only in memory
        shutil.rmtree(folder)
    settings = Settings(trusted_model_roots=[tmp_path / "models"], cache_dir=tmp_path / "cache")
    found = discover_studies("mem://cohort", settings).sources
    assert found == ["mem://cohort/phantom001", "mem://cohort/phantom002"]

    engine = open_record(sqlite_url)
    submission = submit_sources(engine, settings, name="mem-run", source_uri="mem://cohort", sources=found,
                                model_dir=fake_model(tmp_path / "models"))
    ctx = StageContext(engine, LocalStore(tmp_path / "results"), settings)
    for study_id in submission.study_ids:
        assert segment_stage(ctx, study_id, ModelInfo(submission.fingerprint, oracle), worker="t")
        evaluate_stage(ctx, study_id)

    with session_scope(engine) as session:
        studies = session.execute(select(Study.source_uri, Study.status, Study.pathology_group)).all()
        assert sorted(studies) == [("mem://cohort/phantom001", StudyStatus.DONE, "PHANTOM"),
                                   ("mem://cohort/phantom002", StudyStatus.DONE, "PHANTOM")]
        assert len(session.execute(select(Mask.id)).all()) == 4
        dice = session.execute(select(Metric.dice)).scalars().all()
        assert len(dice) == 12 and all(d == pytest.approx(1.0) for d in dice)
    engine.dispose()
    # each stage fetched its own copy and released it
    assert source.fetched == source.released == [found[0], found[0], found[1], found[1]]
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_a_study_missing_from_a_registered_scheme_fails_alone(memory: tuple[MemorySource, list[Path]],
                                                              sqlite_url: str, tmp_path: Path) -> None:
    source, folders = memory
    settings = Settings(trusted_model_roots=[tmp_path / "models"], cache_dir=tmp_path / "cache")
    engine = open_record(sqlite_url)
    submission = submit_sources(engine, settings, name="gone", source_uri="mem://cohort",
                                sources=["mem://cohort/phantom404", "mem://cohort/phantom001"],
                                model_dir=fake_model(tmp_path / "models"))
    ctx = StageContext(engine, LocalStore(tmp_path / "results"), settings)
    model = ModelInfo(submission.fingerprint, Oracle(folders))
    outcomes = [segment_stage(ctx, study_id, model, worker="t") for study_id in submission.study_ids]
    with session_scope(engine) as session:
        rows = dict(session.execute(select(Study.source_uri, Study.error)).all())
    engine.dispose()
    assert outcomes == [False, True]
    assert source.released == ["mem://cohort/phantom404", "mem://cohort/phantom001"]  # released even when failed
    assert rows["mem://cohort/phantom404"] == "mem://cohort/phantom404: not in memory"
    assert rows["mem://cohort/phantom001"] is None


def test_schemes_are_resolved_by_uri(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path / "cache")
    assert isinstance(source_for("/data/cohort", settings), LocalSource)
    assert isinstance(source_for("file:///data/cohort", settings), LocalSource)
    assert [scheme_of(u) for u in ("s3://b/k", "DICOMWEB://h/x", "/a/b")] == ["s3", "dicomweb", "file"]
    with pytest.raises(StudyError, match=r"gs://bucket: no source reads gs:// URIs; use a folder or one of "
                                         r"dicomweb://, dicomwebs://, s3://"):
        source_for("gs://bucket", settings)
    with pytest.raises(ValueError, match="already registered"):
        register_source("s3", lambda settings: LocalSource())
    cohort = tmp_path / "cohort"
    write_cohort(cohort, 1, seed=1)
    with pytest.raises(StudyError, match="--study and --series apply to dicomweb:// sources only"):
        discover_studies(str(cohort), settings, Selection(studies=("1.2.3",)))
    assert discover_studies(f"file://{cohort}", settings).sources == [str((cohort / "phantom001").resolve())]
