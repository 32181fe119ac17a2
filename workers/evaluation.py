"""Compare two folders of label maps matched by file name (``heartseg evaluate``)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from heartseg.errors import ConfigurationError, StudyError
from heartseg.labels import ACDC_NUMBERING, STRUCTURES, Structure
from heartseg.studies.nifti import (
    Volume,
    as_labels,
    check_same_grid,
    is_nifti,
    read_volume,
    strip_nifti_suffix,
)
from workers.metrics import StructureMetrics, compare_label_maps

#: Columns of the per-case CSV, in order.
CSV_COLUMNS = ("case", "structure", "dice", "iou", "tp", "fp", "fn", "hd95_mm", "assd_mm", "vol_pred_ml", "vol_ref_ml")


@dataclass(frozen=True)
class CaseResult:
    """One case's metrics per structure, or the error that stopped it."""

    case: str
    metrics: dict[Structure, StructureMetrics] | None = None
    error: str | None = None
    pred_path: Path | None = None
    ref_path: Path | None = None


def resolve_folders(
    pred_arg: Path | None, ref_arg: Path | None, pred_opt: Path | None, ref_opt: Path | None
) -> tuple[Path, Path]:
    """The (prediction, reference) folders from either ``PRED REF`` or ``--pred PRED --ref REF``, not both."""
    positional = pred_arg is not None or ref_arg is not None
    options = pred_opt is not None or ref_opt is not None
    usage = "give the folders as PRED REF or as --pred PRED --ref REF"
    if positional and options:
        raise ConfigurationError(f"evaluate: {usage}, not both")
    if options:
        if pred_opt is None or ref_opt is None:
            raise ConfigurationError(f"evaluate: {'--pred' if pred_opt is None else '--ref'} missing; {usage}")
        return pred_opt, ref_opt
    if pred_arg is None or ref_arg is None:
        raise ConfigurationError(f"evaluate: {'PRED and REF' if pred_arg is None else 'REF'} missing; {usage}")
    return pred_arg, ref_arg


def to_acdc_labels(volume: Volume, numbering: dict[Structure, int]) -> npt.NDArray[np.uint8]:
    """A label map numbered as ``numbering`` says, relabelled to ACDC's values (RV=1, MYO=2, LV=3).

    Values other than 0 and those of ``numbering`` make it a :class:`StudyError`, as values outside
    0-3 do for ACDC's numbering.
    """
    if numbering == ACDC_NUMBERING:
        return as_labels(volume)
    array = np.asarray(volume.data)
    described = ", ".join(f"{v} ({s.value})" for s, v in sorted(numbering.items(), key=lambda item: item[1]))
    if array.dtype.kind == "f" and (not np.isfinite(array).all() or not np.array_equal(array, np.round(array))):
        raise StudyError(volume.path, f"label map has non-integer values; expected labels 0, {described}")
    values = set(np.unique(array).astype(np.int64).tolist())
    unexpected = sorted(values - {0, *numbering.values()})
    if unexpected:
        raise StudyError(
            volume.path, f"label map has values {unexpected} outside the given labels 0 (background), {described}"
        )
    relabelled = np.zeros(array.shape, dtype=np.uint8)
    for structure, value in numbering.items():
        relabelled[array == value] = structure.label
    return relabelled


def list_label_maps(folder: Path) -> dict[str, Path]:
    """Map case name (file name without ``.nii``/``.nii.gz``) to path for the NIfTI files in ``folder``."""
    if not folder.is_dir():
        raise StudyError(folder, "folder not found")
    return {strip_nifti_suffix(p.name): p for p in sorted(folder.iterdir()) if p.is_file() and is_nifti(p)}


def evaluate_case(
    case: str, pred_path: Path, ref_path: Path, numbering: dict[Structure, int] = ACDC_NUMBERING
) -> CaseResult:
    """Metrics of one case; unreadable or inconsistent files become the case's error.

    ``numbering`` is how both label maps number the structures (ACDC's by default).
    """
    try:
        reference = read_volume(ref_path)
        prediction = read_volume(pred_path)
        check_same_grid(reference, prediction)
        metrics = compare_label_maps(
            to_acdc_labels(prediction, numbering), to_acdc_labels(reference, numbering), reference.spacing[:3]
        )
    except StudyError as exc:
        return CaseResult(case, error=str(exc), pred_path=pred_path, ref_path=ref_path)
    return CaseResult(case, metrics=metrics, pred_path=pred_path, ref_path=ref_path)


def evaluate_folders(
    pred_dir: Path,
    ref_dir: Path,
    on_case: Callable[[str], None] | None = None,
    numbering: dict[Structure, int] = ACDC_NUMBERING,
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
            yield evaluate_case(case, preds[case], refs[case], numbering)


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


#: summary.json's metrics: nnU-Net's names (``compute_metrics``), then HeartSeg's distances and volumes.
_JSON_METRICS: tuple[tuple[str, Callable[[StructureMetrics], float | int]], ...] = (
    ("Dice", lambda m: m.dice),
    ("IoU", lambda m: m.iou),
    ("TP", lambda m: m.tp),
    ("FP", lambda m: m.fp),
    ("FN", lambda m: m.fn),
    ("n_pred", lambda m: m.tp + m.fp),
    ("n_ref", lambda m: m.tp + m.fn),
    ("HD95_mm", lambda m: m.hd95_mm),
    ("ASSD_mm", lambda m: m.assd_mm),
    ("vol_pred_ml", lambda m: m.vol_pred_ml),
    ("vol_ref_ml", lambda m: m.vol_ref_ml),
)


def _json_metrics(m: StructureMetrics) -> dict[str, float | int | None]:
    return {name: _json_number(get(m)) for name, get in _JSON_METRICS}


def _json_number(value: float | int | None) -> float | int | None:
    """JSON has no NaN or infinity: such values become null."""
    if value is None or isinstance(value, int):
        return value
    return float(value) if math.isfinite(value) else None


def _nanmean(values: list[float | int | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return _json_number(sum(present) / len(present)) if present else None


def summary_json(results: list[CaseResult], numbering: dict[Structure, int] = ACDC_NUMBERING) -> dict[str, Any]:
    """nnU-Net's ``summary.json`` (``compute_metrics_on_folder``) for the evaluated cases.

    Keys as nnU-Net's: ``metric_per_case`` (``prediction_file``, ``reference_file``, ``metrics`` by label
    value as a string, in ``numbering``), ``mean`` (per label, the mean of each metric over the cases,
    null values left out, as ``np.nanmean`` leaves out NaN and HeartSeg's table infinite distances) and
    ``foreground_mean`` (the mean of the label means; null if any is). Metrics: nnU-Net's Dice, IoU,
    TP, FP, FN, n_pred, n_ref, plus HD95_mm, ASSD_mm, vol_pred_ml, vol_ref_ml. NaN (both masks empty)
    and infinite distances (one mask empty) are written as null, where nnU-Net writes NaN, which is not
    valid JSON. Cases that could not be evaluated are left out, as in the CSV.
    """
    keys = {s: str(v) for s, v in numbering.items()}
    order = sorted(STRUCTURES, key=lambda s: numbering[s])
    per_case: list[dict[str, Any]] = []
    for result in results:
        if result.metrics is None:
            continue
        per_case.append(
            {
                "prediction_file": str(result.pred_path),
                "reference_file": str(result.ref_path),
                "metrics": {keys[s]: _json_metrics(result.metrics[s]) for s in order},
            }
        )
    metric_names = [name for name, _ in _JSON_METRICS]
    means = {
        keys[s]: {name: _nanmean([case["metrics"][keys[s]][name] for case in per_case]) for name in metric_names}
        for s in order
    }
    foreground_mean: dict[str, float | None] = {}
    for name in metric_names:
        label_means = [means[keys[s]][name] for s in order]
        present = [v for v in label_means if v is not None]
        foreground_mean[name] = _json_number(sum(present) / len(present)) if len(present) == len(order) else None
    return {"foreground_mean": foreground_mean, "mean": means, "metric_per_case": per_case}


def write_summary_json(
    results: list[CaseResult], path: Path, numbering: dict[Structure, int] = ACDC_NUMBERING
) -> None:
    """Write :func:`summary_json` to ``path`` (keys sorted, as nnU-Net's ``save_summary_json``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary_json(results, numbering), sort_keys=True, indent=4, allow_nan=False)
    path.write_text(text + "\n")


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
