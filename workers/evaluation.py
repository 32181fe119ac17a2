"""Compare two folders of label maps matched by file name (``heartseg evaluate``)."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from heartseg.errors import StudyError
from heartseg.labels import STRUCTURES, Structure
from heartseg.studies.nifti import as_labels, check_same_grid, is_nifti, read_volume, strip_nifti_suffix
from workers.metrics import StructureMetrics, compare_label_maps

#: Columns of the per-case CSV, in order.
CSV_COLUMNS = ("case", "structure", "dice", "iou", "tp", "fp", "fn", "hd95_mm", "assd_mm", "vol_pred_ml", "vol_ref_ml")


@dataclass(frozen=True)
class CaseResult:
    """One case's metrics per structure, or the error that stopped it."""

    case: str
    metrics: dict[Structure, StructureMetrics] | None = None
    error: str | None = None


def list_label_maps(folder: Path) -> dict[str, Path]:
    """Map case name (file name without ``.nii``/``.nii.gz``) to path for the NIfTI files in ``folder``."""
    if not folder.is_dir():
        raise StudyError(folder, "folder not found")
    return {strip_nifti_suffix(p.name): p for p in sorted(folder.iterdir()) if p.is_file() and is_nifti(p)}


def evaluate_case(case: str, pred_path: Path, ref_path: Path) -> CaseResult:
    """Metrics of one case; unreadable or inconsistent files become the case's error."""
    try:
        reference = read_volume(ref_path)
        prediction = read_volume(pred_path)
        check_same_grid(reference, prediction)
        metrics = compare_label_maps(as_labels(prediction), as_labels(reference), reference.spacing[:3])
    except StudyError as exc:
        return CaseResult(case, error=str(exc))
    return CaseResult(case, metrics=metrics)


def evaluate_folders(
    pred_dir: Path, ref_dir: Path, on_case: Callable[[str], None] | None = None
) -> Iterator[CaseResult]:
    """Evaluate every case found in either folder; a case in only one of them is an error row."""
    preds = list_label_maps(pred_dir)
    refs = list_label_maps(ref_dir)
    for case in sorted(set(preds) | set(refs)):
        if on_case is not None:
            on_case(case)
        if case not in refs:
            yield CaseResult(case, error=f"{preds[case]}: no reference named {case} in {ref_dir}")
        elif case not in preds:
            yield CaseResult(case, error=f"{refs[case]}: no prediction named {case} in {pred_dir}")
        else:
            yield evaluate_case(case, preds[case], refs[case])


def write_csv(results: list[CaseResult], path: Path) -> None:
    """One row per case and structure with :data:`CSV_COLUMNS`; error cases have no rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for result in results:
            if result.metrics is None:
                continue
            for structure in STRUCTURES:
                m = result.metrics[structure]
                writer.writerow([result.case, structure.value, *(_fmt(v) for v in m.as_dict().values())])


def _fmt(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf"
    return repr(float(value))


@dataclass(frozen=True)
class StructureSummary:
    """Means over the cases of one structure (NaN Dice and infinite distances left out, and counted)."""

    structure: Structure
    n: int
    dice_mean: float
    iou_mean: float
    hd95_mean_mm: float
    assd_mean_mm: float
    n_nan_dice: int
    n_inf_distance: int


def summarize(results: list[CaseResult]) -> list[StructureSummary]:
    """Per-structure means over the evaluated cases."""
    summaries = []
    for structure in STRUCTURES:
        rows = [r.metrics[structure] for r in results if r.metrics is not None]

        def mean(values: list[float]) -> float:
            finite = [v for v in values if math.isfinite(v)]
            return sum(finite) / len(finite) if finite else math.nan

        summaries.append(
            StructureSummary(
                structure=structure,
                n=len(rows),
                dice_mean=mean([m.dice for m in rows]),
                iou_mean=mean([m.iou for m in rows]),
                hd95_mean_mm=mean([m.hd95_mm for m in rows]),
                assd_mean_mm=mean([m.assd_mm for m in rows]),
                n_nan_dice=sum(math.isnan(m.dice) for m in rows),
                n_inf_distance=sum(math.isinf(m.hd95_mm) for m in rows),
            )
        )
    return summaries
