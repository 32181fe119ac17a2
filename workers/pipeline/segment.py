"""The segment stage (GPU queue): claim the study, load it, segment every needed frame, write and record the masks.

Each mask is recorded with what the segmenter measured of its frame's quality when it gives it
(:class:`~workers.quality.FrameQuality`: the uncertainty on the mask's row, and one ``frame_quality``
row per structure with its signals and predicted Dice). A DICOM study's masks are also written as
DICOM SEGs (:mod:`workers.pipeline.dicom_segs`), optional outputs whose failures are warnings.
Idempotent: every write is an upsert keyed by (study, model, frame[, structure]).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from db.lifecycle import (
    add_warning,
    claim_study,
    mark_segmented,
    record_patient,
    record_segmentation,
    renew_lease,
    study_with_run,
)
from db.records import name_problem
from db.schema import NAME_LENGTH
from db.session import session_scope
from db.writes import record_frame_quality, record_mask
from heartseg.enums import Frames, PhaseSource, StudyStatus
from heartseg.errors import StudyError
from heartseg.labels import Structure, frame_phase
from heartseg.privacy import pseudonym
from heartseg.sources import StudySource, load_study
from heartseg.storage import mask_key, sha256_hex
from heartseg.studies.geometry import GeometryLimits
from heartseg.studies.model import Study as LoadedStudy
from workers.indices import find_ed_es
from workers.lease_keeper import Lease, LeaseLostError, lease_kept
from workers.metrics import volume_ml
from workers.monitoring import count_frames, count_study, observe_stage
from workers.pipeline.dicom_segs import write_segs
from workers.pipeline.failures import failed_try, give_back, record_failure
from workers.pipeline.masks import encode_mask
from workers.quality import FrameQuality
from workers.stage_context import StageContext
from workers.transient import TRANSIENT

logger = logging.getLogger(__name__)

#: segment(image (x, y, z), spacing) -> uint8 labels, one frame.
SegmentFn = Callable[[np.ndarray, Sequence[float]], np.ndarray]
#: on_labels(index, labels, quality), called as each frame's labels are ready. ``quality`` is what the segmenter
#: measured of the frame (:class:`~workers.quality.FrameQuality`: its uncertainty, and per structure the signals
#: and the predicted Dice); None where it measured nothing.
OnLabels = Callable[[int, np.ndarray, FrameQuality | None], None]
#: segment_frames(images, spacing, on_labels) -> labels of every frame, pipelined: a loaded
#: :meth:`~workers.inference.predictor.Segmenter.segment_frames`.
SegmentFramesFn = Callable[[Iterable[np.ndarray], Sequence[float], OnLabels], list[np.ndarray]]


@dataclass(frozen=True)
class ModelInfo:
    """What the segment stage needs to know of the loaded model.

    ``segment_frames``, when given, segments a study's frames pipelined (the next frames are
    preprocessed and the last ones written while the device works); else ``segment`` is called
    frame by frame.
    """

    fingerprint: str
    segment: SegmentFn
    segment_frames: SegmentFramesFn | None = None

    def segment_all(self, images: Iterable[np.ndarray], spacing: Sequence[float],
                    on_labels: OnLabels) -> list[np.ndarray]:
        """Label maps of ``images`` in order; ``on_labels(index, labels, quality)`` is called as each one is
        ready (quality None frame by frame: ``segment`` gives labels only)."""
        if self.segment_frames is not None:
            return self.segment_frames(images, spacing, on_labels)
        results = []
        for index, image in enumerate(images):
            results.append(self.segment(image, spacing))
            on_labels(index, results[-1], None)
        return results


def frames_to_segment(study: LoadedStudy, frames: Frames) -> tuple[int, ...]:
    """Every loaded frame for ``all``; ED and ES for ``ed-es`` (every frame when they are not stated)."""
    if frames is Frames.ALL or study.ed is None or study.es is None:
        return study.frame_numbers
    return tuple(sorted({study.ed, study.es}))


def segment_stage(ctx: StageContext, study_id: int, model: ModelInfo, *, worker: str,
                  enqueue_evaluation: Callable[[], None] | None = None) -> bool:
    """Segment one study; True when its masks are recorded and metrics should follow.

    Order, so that a worker killed at any point loses nothing: the masks and frames are
    recorded while the study is still ``running`` under this worker's lease; then the
    evaluation is enqueued (``enqueue_evaluation``); only then is the study marked
    ``segmented``. Killed before the enqueue, the lease expires and the study is segmented
    again (the same rows, upserted); killed after it, the evaluation finishes the study.

    The lease is renewed every third of ``settings.lease_s`` while the frames are segmented, and
    checked before each mask is written and in the transaction that records them: a worker that lost
    it (another worker holds the study) stops and writes nothing more (False).

    Bad input marks the study failed with the reason (no retry). A DICOM SEG that cannot be made,
    or a PACS that does not take the SEGs back, is a warning recorded with the masks (see
    :func:`~workers.pipeline.dicom_segs.write_segs`). A study that another worker holds, or that is
    already past this stage, is left alone (False). A transient error (:data:`~workers.transient.TRANSIENT`)
    gives the study back uncounted and propagates, for the task to retry; any other error is a failed
    try, recorded, and raised as :class:`~workers.pipeline.failures.FailedTryError`.
    """
    engine, lease_s = ctx.engine, ctx.settings.lease_s
    with session_scope(engine) as session:
        if not claim_study(session, study_id, worker, lease_s, max_attempts=ctx.settings.max_attempts):
            logger.info("study %s is not claimable (held elsewhere or finished)", study_id)
            return False
        row, run = study_with_run(session, study_id)
        source_uri, frames, run_name, model_id = row.source_uri, run.frames, run.name, run.model_id

    def renew() -> bool:
        with session_scope(engine) as session:
            return renew_lease(session, study_id, worker, lease_s)

    lease = Lease(renew, lease_s, max_hold_s=ctx.settings.task_time_limit_s)
    try:
        _segment_and_record(ctx, study_id, model, lease, worker, source_uri, frames, run_name, model_id)
        if enqueue_evaluation is not None:
            enqueue_evaluation()
        with session_scope(engine) as session:
            mark_segmented(session, study_id, worker)
    except LeaseLostError as exc:
        logger.warning("study %s: %s; stopped without writing", study_id, exc)
        return False
    except StudyError as exc:
        return record_failure(ctx, study_id, run_name, exc, worker=worker)
    except TRANSIENT:
        give_back(ctx, study_id, worker)
        raise
    except Exception as exc:
        raise failed_try(ctx, study_id, run_name, exc, worker=worker) from exc
    count_study(run_name, StudyStatus.SEGMENTED)
    return True


def _segment_and_record(ctx: StageContext, study_id: int, model: ModelInfo, lease: Lease, worker: str,
                        source_uri: str, frames: Frames, run_name: str, model_id: int) -> None:
    """Segment the study's frames under ``lease`` and record its masks, while this worker still holds it."""
    source = ctx.source(source_uri)
    try:
        with lease_kept(lease, ctx.settings.lease_s / 3):
            result = _segment_frames(ctx, source, source_uri, frames, model, run_name, lease)
    finally:
        source.release(source_uri)
    study, labels, masks, segs = result.study, result.labels, result.masks, result.segs
    ed, es = study.ed, study.es
    phase_source: PhaseSource | None = PhaseSource.STATED
    if ed is None or es is None:
        if len(labels) >= 2:
            ed, es = find_ed_es({n: volume_ml(m == Structure.LV.label, study.spacing) for n, m in labels.items()})
            phase_source = PhaseSource.LV_VOLUME
        else:
            phase_source = None
    with session_scope(ctx.engine) as session:
        if not renew_lease(session, study_id, worker, ctx.settings.lease_s):
            raise LeaseLostError("another worker holds the study, or it is no longer running")
        record_patient(session, study_id, patient_id=result.name, group=study.info.group,
                       height_cm=study.info.height_cm, weight_kg=study.info.weight_kg,
                       n_frames=study.info.n_frames or len(study.frames))
        for number, uri, digest, quality in masks:
            seg_uri, seg_sha256 = segs.get(number, (None, None))
            phase = frame_phase(number, ed, es)
            record_mask(session, study_id=study_id, model_id=model_id, frame=number, phase=phase, uri=uri,
                        sha256=digest, shape=study.shape, spacing=study.spacing, seg_uri=seg_uri,
                        seg_sha256=seg_sha256, uncertainty=None if quality is None else quality.uncertainty)
            record_frame_quality(session, study_id=study_id, model_id=model_id, frame=number, phase=phase,
                                 structures=quality_rows(quality))
        record_segmentation(session, study_id, ed=ed, es=es, phase_source=phase_source, load_s=result.load_s,
                            predict_s=result.predict_s, write_s=result.write_s)
        for warning in result.warnings:
            add_warning(session, study_id, warning)
    count_frames(run_name, len(masks))


def quality_rows(quality: FrameQuality | None) -> list[dict[str, object]]:
    """The ``frame_quality`` columns of each structure the segmenter measured in a frame (none for None): its
    predicted Dice, and its per-fold soft self-Dice and entropy averaged over the folds (the entropy over the
    folds where it is defined; None where none is), with the folds' agreement, their number and the volume."""
    if quality is None:
        return []
    rows: list[dict[str, object]] = []
    for signals in quality.structures:
        entropies = [e for e in signals.entropy if e is not None]
        rows.append({
            "structure": signals.structure, "predicted_dice": signals.predicted_dice,
            "self_dice": float(np.mean(signals.self_dice)) if signals.self_dice else None,
            "entropy": float(np.mean(entropies)) if entropies else None,
            "fold_agreement": signals.fold_agreement, "n_folds": quality.n_folds, "volume_ml": signals.volume_ml,
        })
    return rows


@dataclass
class _Segmented:
    """What segmenting a study's frames produced."""

    study: LoadedStudy
    name: str
    labels: dict[int, np.ndarray]
    masks: list[tuple[int, str, str, FrameQuality | None]]
    """``(frame, uri, sha256, quality)`` of each mask written, with what the segmenter measured of the frame."""
    segs: dict[int, tuple[str, str]]
    load_s: float
    predict_s: float
    write_s: float
    warnings: list[str]


def _segment_frames(ctx: StageContext, source: StudySource, source_uri: str, frames: Frames, model: ModelInfo,
                    run_name: str, lease: Lease | None = None) -> _Segmented:
    """Load the study, segment the frames it needs, write their masks (and SEGs); raises StudyError.

    Each mask is encoded and stored as soon as its frame is segmented (in the segmenter's export
    thread when pipelined, beside the next frames' forward passes).
    ``predict_s`` is the wall time of segmenting every frame, ``write_s`` the part of it spent writing
    masks (overlapped with the forward passes when pipelined) plus the SEGs after.
    """
    started = time.perf_counter()
    study = load_study(source, source_uri, cine=frames is Frames.ALL, limits=GeometryLimits.from_settings(ctx.settings))
    load_s = time.perf_counter() - started
    observe_stage("load", load_s)
    name = pseudonym(study.info.patient_id, ctx.settings.pseudonymize_key)
    problem = name_problem(name, NAME_LENGTH)
    if problem:
        raise StudyError(source_uri, f"the patient name {name[:60]!r}{'...' if len(name) > 60 else ''} {problem}")
    numbers = frames_to_segment(study, frames)
    masks: list[tuple[int, str, str, FrameQuality | None]] = []
    write_s = 0.0

    def write(index: int, labels: np.ndarray, quality: FrameQuality | None = None) -> None:
        """Store one frame's mask; ``quality`` is recorded with it when the segmenter gives it."""
        nonlocal write_s
        if lease is not None:
            lease.check()
        t0 = time.perf_counter()
        number = numbers[index]
        data = encode_mask(labels, study)
        uri = ctx.store.put(mask_key(model.fingerprint, run_name, name, number), data)
        masks.append((number, uri, sha256_hex(data), quality))
        write_s += time.perf_counter() - t0

    t0 = time.perf_counter()
    segmented = model.segment_all((study.frame(n).image for n in numbers), study.spacing, write)
    predict_s = time.perf_counter() - t0
    labels = dict(zip(numbers, segmented, strict=True))
    t0 = time.perf_counter()
    written = write_segs(ctx, study, labels, model.fingerprint, run_name, name, source, source_uri)
    write_s += time.perf_counter() - t0
    observe_stage("write", write_s)
    return _Segmented(study, name, labels, masks, written.segs, load_s, predict_s, write_s, written.warnings)
