"""The segment stage's optional outputs: each mask as a DICOM SEG, stored back where the study came from.

The masks are the stage's product; the DICOM SEGs and storing them back to a PACS are optional
outputs: when one of those fails, the masks are recorded all the same, the study goes on to its
evaluation, and the failure is recorded against it (``studies.warnings``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from heartseg.sources import StudySource
from heartseg.storage import seg_key, sha256_hex
from heartseg.studies.model import Study as LoadedStudy
from workers.pipeline.failures import error_line
from workers.stage_context import StageContext

logger = logging.getLogger(__name__)


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
            refused.setdefault(error_line(exc), []).append(number)
            continue
        segs[number] = (ctx.store.put(seg_key(fingerprint, run_name, name, number), data), sha256_hex(data))
        payloads.append(data)
    warnings = [f"DICOM SEG not written for {_frames_text(numbers)}: {reason}" for reason, numbers in refused.items()]
    if payloads:
        try:
            if source.store_back(source_uri, payloads):
                logger.info("stored %d SEG instances back to %s", len(payloads), source_uri)
        except Exception as exc:  # PacsError, a refusal (StudyError) or the client's own error
            warnings.append(f"DICOM SEGs not stored back to the source: {error_line(exc)}")
    for warning in warnings:
        logger.warning("%s: %s", source_uri, warning)
    return WrittenSegs(segs, warnings)


def _frames_text(numbers: Sequence[int]) -> str:
    """``frame 3``, or ``frames 1-20`` for a run, else ``frames 1, 4, 7``."""
    ordered = sorted(numbers)
    if len(ordered) == 1:
        return f"frame {ordered[0]}"
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"frames {ordered[0]}-{ordered[-1]}"
    return "frames " + ", ".join(map(str, ordered))
