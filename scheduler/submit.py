"""Record a run and its studies (the scheduler's half of ``heartseg submit``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select

from db.lifecycle import requeue_finished
from db.records import RecordError, name_problem
from db.schema import NAME_LENGTH, Study
from db.session import session_scope
from db.writes import add_studies, done_source_uris, ensure_model, ensure_run
from heartseg.enums import Frames, StudyStatus
from heartseg.models import POSTPROCESSING_FILE, ModelError, available_folds, check_trusted, model_fingerprint
from heartseg.privacy import pseudonym
from heartseg.settings import Settings


@dataclass(frozen=True)
class Submission:
    """What a submit recorded: the run, the studies to process and those skipped as already done."""

    run_id: int
    model_id: int
    fingerprint: str
    study_ids: list[int]
    skipped: list[str]
    """Sources already done by this model (not enqueued again without ``force``)."""
    refused: list[tuple[str, str]] = field(default_factory=list)
    """``(source, reason)`` of studies that cannot be recorded (their name is too long, ...)."""
    in_progress: int = 0
    """Studies of the run submitted again that are running or segmented (not sent again)."""
    failed: int = 0
    """Studies of the run submitted again that failed earlier (``heartseg retry RUN --failed``)."""


def study_name(source: str) -> str:
    """A readable study name from its source (refined from the data when the study is loaded)."""
    if "#" in source:
        return source.rsplit("#", 1)[1]
    last = source.rstrip("/").rpartition("/")[2]
    if last and last != ".":  # what ``Path(...).name`` gives, without building a Path for each of a cohort's studies
        return last
    return Path(source.rstrip("/")).name


def register_model(engine: Engine, settings: Settings, model_dir: Path) -> tuple[int, str]:
    """Check the model folder (trusted, readable; no torch) and record it as used with the current settings
    (postprocessed masks when ``HEARTSEG_POSTPROCESSING`` is on and the folder has ``postprocessing.pkl``, as the
    segmenter does).

    Raises
    ------
    ModelError
        For a folder outside the trusted roots, or one whose files are missing or cannot be read.
    """
    check_trusted(model_dir, settings.trusted_roots)
    postprocessing = settings.postprocessing and (model_dir / POSTPROCESSING_FILE).is_file()
    try:
        fingerprint = model_fingerprint(model_dir, settings.folds, settings.checkpoint_name,
                                        postprocessing=postprocessing)
        for name in ("plans.json", "dataset.json"):
            json.loads((model_dir / name).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{model_dir}: the model folder cannot be read: {type(exc).__name__}: {exc}") from exc
    folds = ",".join(settings.folds or available_folds(model_dir, settings.checkpoint_name))
    configuration = model_dir.name.rsplit("__", 1)[-1] if "__" in model_dir.name else None
    with session_scope(engine) as session:
        model_id = ensure_model(session, fingerprint=fingerprint, path=str(model_dir.resolve()),
                                configuration=configuration, folds=folds, checkpoint_name=settings.checkpoint_name,
                                use_mirroring=settings.use_mirroring, tile_step_size=settings.tile_step_size)
    return model_id, fingerprint


def submit_sources(engine: Engine, settings: Settings, *, name: str, source_uri: str, sources: Sequence[str],
                   model_dir: Path, frames: Frames = Frames.ED_ES, force: bool = False) -> Submission:
    """Record run ``name`` and its studies as queued, skipping those this model has already done.

    A study whose name cannot be recorded is refused (listed in :attr:`Submission.refused`); the rest
    of the cohort is recorded. For a run submitted again, :attr:`Submission.study_ids` holds only the
    studies to send: those still queued, and with ``force`` its done and failed studies too, queued
    again (their rows are replaced as they are redone); running and segmented ones are counted apart.

    Raises
    ------
    RecordError
        When the run name itself cannot be recorded.
    """
    problem = name_problem(name, NAME_LENGTH)
    if problem:
        raise RecordError(f"run name {name[:60]!r}{'...' if len(name) > 60 else ''} {problem}")
    model_id, fingerprint = register_model(engine, settings, model_dir)
    key = settings.pseudonymize_key
    names = {s: pseudonym(study_name(s), key) for s in sources}
    refused = [(s, f"study name {n[:60]!r}{'...' if len(n) > 60 else ''} {problem}") for s, n in names.items()
               if (problem := name_problem(n, NAME_LENGTH))]
    refused_sources = {s for s, _ in refused}
    accepted = [s for s in sources if s not in refused_sources]
    with session_scope(engine) as session:
        run_id = ensure_run(session, name=name, source_uri=source_uri, model_id=model_id, frames=frames)
        done = set() if force else done_source_uris(session, fingerprint, accepted)
        skipped = sorted(done)
        todo = [s for s in accepted if s not in done]
        ids = add_studies(session, run_id, [{"source_uri": s, "patient_id": names[s]} for s in todo])
        if force:
            requeue_finished(session, run_id, (StudyStatus.DONE, StudyStatus.FAILED), ids)
        # The run's studies that are not queued (none for a new run; index ix_studies_run_id_status), not
        # IN (ids): a cohort can hold more studies than a statement takes parameters.
        statuses = {i: status for i, status in session.execute(
            select(Study.id, Study.status).where(Study.run_id == run_id, Study.status != StudyStatus.QUEUED))}
    queued = [i for i in ids if i not in statuses]
    in_progress = sum(statuses.get(i) in (StudyStatus.RUNNING, StudyStatus.SEGMENTED) for i in ids)
    failed = sum(statuses.get(i) is StudyStatus.FAILED for i in ids)
    return Submission(run_id, model_id, fingerprint, queued, skipped, refused, in_progress, failed)
