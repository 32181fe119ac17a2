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

==============  =========================================================================================
Module          What it holds
==============  =========================================================================================
``segment``     the segment stage, :class:`ModelInfo` (what it needs of the loaded model)
``dicom_segs``  the segment stage's optional outputs: DICOM SEGs, stored back to the study's source
``evaluate``    the evaluate stage
``masks``       the mask file (a gzip'd NIfTI) both stages share
``failures``    what a failed study records: bad input, a failed try (:class:`FailedTryError`), a give-back
==============  =========================================================================================
"""

from workers.pipeline.dicom_segs import WrittenSegs, write_segs
from workers.pipeline.evaluate import evaluate_stage
from workers.pipeline.failures import FailedTryError, record_failure, refuse_study
from workers.pipeline.masks import decode_mask, encode_mask
from workers.pipeline.segment import (
    ModelInfo,
    OnLabels,
    SegmentFn,
    SegmentFramesFn,
    frames_to_segment,
    quality_rows,
    segment_stage,
)

__all__ = [
    "FailedTryError",
    "ModelInfo",
    "OnLabels",
    "SegmentFn",
    "SegmentFramesFn",
    "WrittenSegs",
    "decode_mask",
    "encode_mask",
    "evaluate_stage",
    "frames_to_segment",
    "quality_rows",
    "record_failure",
    "refuse_study",
    "segment_stage",
    "write_segs",
]
