"""The two stages of a study, as plain functions: Celery tasks and the in-process runner call them.

``segment_stage`` (GPU queue): claim the study, load it, segment every needed frame, write
the masks, record them with what the segmenter measured of each frame's quality when it gives it
(:class:`~workers.quality.FrameQuality`: the uncertainty on the mask's row, and one ``frame_quality``
row per structure with its signals and predicted Dice).
``evaluate_stage`` (CPU queue): read the masks back with the references, compute metrics and
cardiac indices, and the QC flags of every study (``workers.qc``, with or without references,
the predicted Dice included), record them, mark the study done.
Both are idempotent: every write is an upsert keyed by (study, model, frame[, structure]).

The masks are the stage's product; the DICOM SEGs and storing them back to a PACS are optional
outputs: when one of those fails, the masks are recorded all the same, the study goes on to its
evaluation, and the failure is recorded against it (``studies.warnings``).
"""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from sqlalchemy.orm import Session

from db.lifecycle import (
    add_warning,
    claim_study,
    mark_done,
    mark_failed,
    mark_segmented,
    record_failed_evaluation,
    record_failed_try,
    record_patient,
    record_segmentation,
    release_claim,
    renew_lease,
    study_with_run,
)
from db.reads import study_masks, study_predicted_dice
from db.records import name_problem
from db.schema import NAME_LENGTH
from db.session import session_scope
from db.writes import record_frame_quality, record_indices, record_mask, record_metrics, record_qc_flags
from heartseg.enums import Frames, IndexSource, PhaseSource, StudyStatus
from heartseg.errors import HeartSegError, StudyError
from heartseg.labels import Structure, frame_phase
from heartseg.privacy import pseudonym
from heartseg.sources import StudySource, load_study
from heartseg.storage import gzip_deterministic, mask_key, seg_key, sha256_hex
from heartseg.studies.geometry import GeometryLimits
from heartseg.studies.model import Study as LoadedStudy
from workers.indices import CardiacIndices, cardiac_indices, find_ed_es
from workers.lease_keeper import Lease, LeaseLostError, lease_kept
from workers.metrics import compare_label_maps, volume_ml
from workers.monitoring import count_frames, count_study, observe_stage
from workers.qc import QcThresholds, study_flags
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


class FailedTryError(Exception):
    """A try of a study ended in an unexpected error, recorded against it (``error``, one try counted).

    ``status`` is what the record made of the study: ``queued`` or ``segmented`` (its stage's message
    is to be sent again), ``failed`` (out of tries), or None (another worker holds it now).
    """

    def __init__(self, study_id: int, status: StudyStatus | None, reason: str) -> None:
        super().__init__(f"study {study_id}: {reason}")
        self.study_id, self.status, self.reason = study_id, status, reason


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


def encode_mask(labels: np.ndarray, study: LoadedStudy) -> bytes:
    """A gzip'd NIfTI of ``labels`` in the study's geometry, byte-identical for identical labels."""
    header = study.header.copy() if isinstance(study.header, nib.Nifti1Header) else None
    image = nib.Nifti1Image(np.asarray(labels, dtype=np.uint8), study.affine, header)
    image.set_data_dtype(np.uint8)
    image.header.set_slope_inter(1.0, 0.0)
    if header is not None and header["dim"][0] > 3:
        image.header.set_zooms(header.get_zooms()[:3])
    return gzip_deterministic(image.to_bytes())


def decode_mask(data: bytes) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Labels and image of a mask written by :func:`encode_mask`."""
    image = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    return np.asarray(image.dataobj).astype(np.uint8), image


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
    :func:`write_segs`). A study that another worker holds, or that is already past this stage, is
    left alone (False). A transient error (:data:`~workers.transient.TRANSIENT`) gives the study back
    uncounted and propagates, for the task to retry; any other error is a failed try, recorded, and
    raised as :class:`FailedTryError`.
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
        _give_back(ctx, study_id, worker)
        raise
    except Exception as exc:
        raise _failed_try(ctx, study_id, run_name, exc, worker=worker) from exc
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


def _give_back(ctx: StageContext, study_id: int, worker: str) -> None:
    """After a transient error: give the study back uncounted, trying for as long as the lease lasts (the record
    may be what is away); when that fails, the lease expires and the reconciler re-queues the study (a try)."""
    deadline = time.monotonic() + ctx.settings.lease_s
    while True:
        try:
            with session_scope(ctx.engine) as session:
                release_claim(session, study_id, worker)
            return
        except Exception as exc:
            if time.monotonic() + 1.0 > deadline:
                logger.warning("study %s: could not give the study back (%s); its lease will expire", study_id, exc)
                return
            time.sleep(1.0)


def _failed_try(ctx: StageContext, study_id: int, run_name: str, exc: Exception, *,
                worker: str | None = None) -> FailedTryError:
    """Record an unexpected error as a failed try of the study (its traceback in the log) and say what became of it:
    the segmentation's try when ``worker`` holds the study, else the evaluation's."""
    reason = _reason(exc)
    logger.error("study %s: unexpected error (%s)", study_id, reason, exc_info=exc)
    limit = ctx.settings.max_attempts
    try:
        with session_scope(ctx.engine) as session:
            status = (record_failed_try(session, study_id, worker, reason, limit) if worker is not None
                      else record_failed_evaluation(session, study_id, reason, limit))
    except Exception:
        logger.warning("study %s: could not record the failed try", study_id, exc_info=True)
        status = None
    if status is StudyStatus.FAILED:
        count_study(run_name, StudyStatus.FAILED)
        logger.warning("study %s failed after its last try: %s", study_id, reason)
    return FailedTryError(study_id, status, reason)


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


def refuse_study(ctx: StageContext, study_id: int, exc: HeartSegError, *, worker: str) -> bool:
    """Fail a study that cannot be segmented at all (its model cannot be loaded), if it is still to be done:
    claimed like any study first, so one that is held elsewhere or finished is left alone (False)."""
    with session_scope(ctx.engine) as session:
        if not claim_study(session, study_id, worker, ctx.settings.lease_s):
            return False
        _, run = study_with_run(session, study_id)
        run_name = run.name
    record_failure(ctx, study_id, run_name, exc, worker=worker)
    return True


def record_failure(ctx: StageContext, study_id: int, run_name: str, exc: HeartSegError, stage: str = "segment",
                   worker: str | None = None) -> bool:
    """Record bad input (or a model that cannot be loaded) against the study: no retry; False: nothing follows.
    With ``worker``, only while that worker holds the study."""
    with session_scope(ctx.engine) as session:
        mark_failed(session, study_id, str(exc), worker=worker)
    count_study(run_name, StudyStatus.FAILED)
    logger.warning("study %s failed in %s: %s", study_id, stage, exc)
    return False


@dataclass
class WrittenSegs:
    """What :func:`write_segs` wrote: ``{frame: (uri, sha256)}`` of each SEG, and what it could not write."""

    segs: dict[int, tuple[str, str]]
    warnings: list[str]


def write_segs(ctx: StageContext, study: LoadedStudy, labels: dict[int, np.ndarray], fingerprint: str,
               run_name: str, name: str, source: StudySource, source_uri: str) -> WrittenSegs:
    """For a DICOM study, each frame's mask as a DICOM SEG beside its NIfTI (and stored back where the study
    came from, where its source keeps them: a PACS); nothing for other studies.

    The SEGs are optional outputs, so their failures are warnings, not errors: a frame whose SEG
    cannot be made (highdicom refuses its source images, whatever the exception) gets none, and the
    warning names the frames and why; a STOW-RS that fails (a PACS that refuses the SEGs, or does not
    answer: :class:`~heartseg.sources.dicomweb.PacsError`, transient elsewhere, is not retried here, since
    the masks are safe and retrying would segment the study again) is a warning too. Writing a SEG to the
    results store is not optional: a :class:`StorageError` there propagates (transient, the task retries).
    """
    if not study.dicom_files:
        return WrittenSegs({}, [])
    from heartseg import __version__
    from workers.dicom_seg import build_seg, encode_seg, read_sources

    segs, payloads = {}, []
    refused: dict[str, list[int]] = {}
    for number, frame_labels in labels.items():
        try:
            sources = read_sources(study.dicom_files[number])
            data = encode_seg(build_seg(frame_labels, sources, fingerprint=fingerprint, frame=number,
                                        version=__version__))
        except Exception as exc:  # an optional output: any refusal is recorded, the masks stay
            refused.setdefault(_reason(exc), []).append(number)
            continue
        segs[number] = (ctx.store.put(seg_key(fingerprint, run_name, name, number), data), sha256_hex(data))
        payloads.append(data)
    warnings = [f"DICOM SEG not written for {_frames_text(numbers)}: {reason}" for reason, numbers in refused.items()]
    if payloads:
        try:
            if source.store_back(source_uri, payloads):
                logger.info("stored %d SEG instances back to %s", len(payloads), source_uri)
        except Exception as exc:  # PacsError, a refusal (StudyError) or the client's own error
            warnings.append(f"DICOM SEGs not stored back to the source: {_reason(exc)}")
    for warning in warnings:
        logger.warning("%s: %s", source_uri, warning)
    return WrittenSegs(segs, warnings)


def _reason(exc: BaseException) -> str:
    """An exception as one line of a warning: its type and message."""
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"[:1000]


def _frames_text(numbers: Sequence[int]) -> str:
    """``frame 3``, or ``frames 1-20`` for a run, else ``frames 1, 4, 7``."""
    ordered = sorted(numbers)
    if len(ordered) == 1:
        return f"frame {ordered[0]}"
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"frames {ordered[0]}-{ordered[-1]}"
    return "frames " + ", ".join(map(str, ordered))


def evaluate_stage(ctx: StageContext, study_id: int) -> None:
    """Metrics against the references, cardiac indices and QC flags from the masks; marks the study done.

    Bad input fails the study; a transient error propagates (the task retries it); any other error is a
    failed try, recorded, and raised as :class:`FailedTryError` (``segmented``: to be evaluated again).

    The QC flags (:mod:`workers.qc`) are computed for every study, with or without references, from the
    predicted masks, their cardiac indices, the uncertainty the segmenter recorded with each mask and the
    predicted Dice it recorded per frame and structure (``frame_quality``); they replace the study's earlier
    flags for the model in the same transaction that marks it done.
    """
    started = time.perf_counter()
    with session_scope(ctx.engine) as session:
        row, run = study_with_run(session, study_id)
        source_uri, model_id, ed, es, run_name = row.source_uri, run.model_id, row.ed_frame, row.es_frame, run.name
        masks = study_masks(session, study_id, model_id)
        predicted_dice = study_predicted_dice(session, study_id, model_id)
    uncertainties = {frame: uncertainty for frame, _, uncertainty in masks}
    source = ctx.source(source_uri)
    try:
        try:
            study = load_study(source, source_uri, cine=False, limits=GeometryLimits.from_settings(ctx.settings))
        finally:
            source.release(source_uri)  # pixels and references are in memory now
        predicted = {frame: decode_mask(ctx.store.get(uri))[0] for frame, uri, _ in masks}
        with session_scope(ctx.engine) as session:
            for frame, labels in sorted(predicted.items()):
                try:
                    reference = study.frame(frame).reference
                except KeyError:
                    reference = None
                if reference is not None:
                    metrics = compare_label_maps(labels, reference, study.spacing)
                    record_metrics(session, study_id=study_id, model_id=model_id, frame=frame,
                                   phase=frame_phase(frame, ed, es),
                                   metrics={s: m.as_dict() for s, m in metrics.items()})
            indices = _record_indices(session, study_id, model_id, study, predicted, ed, es)
            flags = study_flags(predicted, study.spacing, indices, uncertainties,
                                QcThresholds.from_settings(ctx.settings), predicted_dice,
                                {frame: frame_phase(frame, ed, es) for frame in predicted})
            record_qc_flags(session, study_id=study_id, model_id=model_id, flags=[f.as_row() for f in flags])
            metrics_s = time.perf_counter() - started
            mark_done(session, study_id, metrics_s=metrics_s)
    except TRANSIENT:
        raise  # the record or the results store was unreachable: the task retries it
    except HeartSegError as exc:
        record_failure(ctx, study_id, run_name, exc, stage="evaluation")
        return
    except Exception as exc:
        raise _failed_try(ctx, study_id, run_name, exc) from exc
    observe_stage("metrics", metrics_s)
    count_study(run_name, StudyStatus.DONE)


def _record_indices(session: Session, study_id: int, model_id: int, study: LoadedStudy,
                    predicted: dict[int, np.ndarray], ed: int | None, es: int | None) -> CardiacIndices | None:
    """Record the cardiac indices from the predicted masks (and the references, when both ED and ES have one);
    returns the predicted ones (None when the ED or ES mask is missing)."""
    if ed is None or es is None or ed not in predicted or es not in predicted:
        return None
    body = {"height_cm": study.info.height_cm, "weight_kg": study.info.weight_kg,
            "heart_rate_bpm": study.info.heart_rate_bpm}
    stated = study.ed is not None  # else ED and ES were found from the LV volumes, and are found again
    pred = cardiac_indices(predicted, study.spacing, ed_frame=ed if stated else None, es_frame=es if stated else None,
                           **body)
    record_indices(session, study_id=study_id, model_id=model_id, source=IndexSource.PRED, indices=pred.as_dict())
    references = {f.number: f.reference for f in study.frames_with_reference() if f.reference is not None}
    if ed in references and es in references:
        ref = cardiac_indices(references, study.spacing, ed_frame=ed, es_frame=es, **body)
        record_indices(session, study_id=study_id, model_id=model_id, source=IndexSource.REF, indices=ref.as_dict())
    return pred
