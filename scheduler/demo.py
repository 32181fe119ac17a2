"""``heartseg demo``: segment a phantom cohort (and the ACDC validation patients when present).

This is the in-process form of the main job; the distributed pipeline replaces the
segmentation loop here once it lands. The model is imported only inside :func:`run_demo`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from heartseg.phantom import write_cohort
from heartseg.settings import Settings
from heartseg.studies.acdc import load_acdc_patient
from heartseg.studies.nifti import write_label_map
from scheduler.evaluate import CaseResult, evaluate_folders
from workers.indices import CardiacIndices, cardiac_indices


@dataclass(frozen=True)
class CohortOutcome:
    """Evaluation of one demo cohort."""

    name: str
    results: list[CaseResult]
    indices: dict[str, tuple[CardiacIndices, CardiacIndices]]
    """Per patient: (from predicted masks, from reference masks)."""
    truth_ef: dict[str, float]
    """Analytic LV EF per phantom patient (empty for real data)."""


def segment_cohort(
    name: str, folders: list[Path], out: Path, segment: Callable[..., object],
    on_frame: Callable[[], None] | None = None,
) -> CohortOutcome:
    """Segment the ED and ES frames of each patient folder and evaluate them against the references."""
    preds, refs = out / name / "predictions", out / name / "references"
    for folder in (preds, refs):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    indices, truth_ef = {}, {}
    for folder in folders:
        study = load_acdc_patient(folder, cine=False)
        labels = {}
        for frame in study.frames:
            labels[frame.number] = segment(frame.image, study.spacing)
            case = f"{study.study_id}_frame{frame.number:02d}"
            write_label_map(preds / f"{case}.nii.gz", labels[frame.number], study.affine, study.header)
            shutil.copyfile(folder / f"{case}_gt.nii.gz", refs / f"{case}.nii.gz")
            if on_frame is not None:
                on_frame()
        reference = {f.number: f.reference for f in study.frames_with_reference() if f.reference is not None}
        indices[study.study_id] = (
            cardiac_indices(labels, study.spacing, ed_frame=study.ed, es_frame=study.es),
            cardiac_indices(reference, study.spacing, ed_frame=study.ed, es_frame=study.es),
        )
        truth_file = folder / "Truth.json"
        if truth_file.is_file():
            truth_ef[study.study_id] = float(json.loads(truth_file.read_text())["lv_ef_pct"])
    return CohortOutcome(name, list(evaluate_folders(preds, refs)), indices, truth_ef)


def demo_cohorts(settings: Settings, out: Path, n_phantoms: int, seed: int) -> dict[str, list[Path]]:
    """The cohorts the demo runs: phantoms written now, and the ACDC validation patients if present."""
    from workers.training.split import VALIDATION_PATIENTS

    phantoms = out / "phantoms"
    shutil.rmtree(phantoms, ignore_errors=True)
    write_cohort(phantoms, n_phantoms, seed)
    cohorts = {"phantoms": sorted(p for p in phantoms.iterdir() if p.is_dir())}
    acdc = settings.acdc_training_dir
    if acdc.is_dir():
        cohorts["acdc-validation"] = [acdc / p for p in VALIDATION_PATIENTS if (acdc / p).is_dir()]
    return cohorts
