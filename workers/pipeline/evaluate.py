"""The evaluate stage (CPU queue): metrics, cardiac indices and QC flags from a study's recorded masks.

It reads the masks back with the references, computes metrics and cardiac indices, and the QC
flags of every study (:mod:`workers.qc`, with or without references, the predicted Dice included),
records them and marks the study done. Idempotent: every write is an upsert keyed by (study,
model, frame[, structure]).
"""

from __future__ import annotations

import time

import numpy as np
from sqlalchemy.orm import Session

from db.lifecycle import mark_done, study_with_run
from db.reads import study_masks, study_predicted_dice
from db.session import session_scope
from db.writes import record_indices, record_metrics, record_qc_flags
from heartseg.enums import IndexSource, StudyStatus
from heartseg.errors import HeartSegError
from heartseg.labels import frame_phase
from heartseg.sources import load_study
from heartseg.studies.geometry import GeometryLimits
from heartseg.studies.model import Study as LoadedStudy
from workers.indices import CardiacIndices, cardiac_indices
from workers.metrics import compare_label_maps
from workers.monitoring import count_study, observe_stage
from workers.pipeline.failures import failed_try, record_failure
from workers.pipeline.masks import decode_mask
from workers.qc import QcThresholds, study_flags
from workers.stage_context import StageContext
from workers.transient import TRANSIENT


def evaluate_stage(ctx: StageContext, study_id: int) -> None:
    """Metrics against the references, cardiac indices and QC flags from the masks; marks the study done.

    Bad input fails the study; a transient error propagates (the task retries it); any other error is a
    failed try, recorded, and raised as :class:`~workers.pipeline.failures.FailedTryError` (``segmented``:
    to be evaluated again).

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
        raise failed_try(ctx, study_id, run_name, exc) from exc
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
