"""Validation of rows before they enter the record: bad values get a clear error, never a row."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import TypeVar

from heartseg.enums import PhaseSource
from heartseg.errors import HeartSegError
from heartseg.labels import Structure

E = TypeVar("E", bound=enum.StrEnum)


class RecordError(HeartSegError):
    """A value that must not be recorded (the message says which row and why)."""


def member(kind: type[E], value: object, where: str, what: str) -> E:
    """``value`` as a member of ``kind``: a member is returned as it is, its string value converted.

    Raises
    ------
    RecordError
        When ``value`` is none of ``kind``'s values; the message names ``where`` and ``what``.
    """
    if isinstance(value, kind):
        return value
    values = [m.value for m in kind]
    if isinstance(value, str) and value in values:
        return kind(value)
    expected = f"{', '.join(values[:-1])} or {values[-1]}" if len(values) > 1 else values[0]
    raise RecordError(f"{where}: unknown {what} {value!r}; expected {expected}")


def name_problem(name: str, limit: int) -> str | None:
    """Why ``name`` (a run name, a patient identifier) cannot be recorded, or None: empty, longer than
    ``limit`` characters, or holding control characters. Any other text (unicode, quotes, ``../``) is kept as
    given; paths built from names encode them (:func:`heartseg.paths.key_part`)."""
    if not name.strip():
        return "is empty"
    if len(name) > limit:
        return f"has {len(name)} characters; the record keeps at most {limit}"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "holds control characters"
    return None


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else float(value)


def metric_row(where: str, structure: Structure, metrics: Mapping[str, float]) -> dict[str, object]:
    """Check one structure's metrics (``StructureMetrics.as_dict()``) and turn them into column values.

    NaN Dice/IoU (both masks empty) and NaN or infinite distances (a mask empty) become NULL.

    Raises
    ------
    RecordError
        For an unknown structure, a Dice or IoU outside [0, 1], a NaN Dice although a mask
        is not empty, negative counts, volumes or distances.
    """
    values = dict(metrics)
    structure = member(Structure, structure, where, "structure")
    label = f"{where} {structure.value}"
    tp, fp, fn = (int(values[k]) for k in ("tp", "fp", "fn"))
    if min(tp, fp, fn) < 0:
        raise RecordError(f"{label}: negative voxel counts tp={tp} fp={fp} fn={fn}")
    for name in ("dice", "iou"):
        value = float(values[name])
        if math.isnan(value):
            if tp + fp + fn > 0:
                raise RecordError(f"{label}: {name} is NaN but the masks are not empty (tp+fp+fn={tp + fp + fn})")
        elif not 0.0 <= value <= 1.0:
            raise RecordError(f"{label}: {name} = {value} is outside [0, 1]")
    for name in ("vol_pred_ml", "vol_ref_ml", "hd95_mm", "assd_mm"):
        value = float(values[name])
        if value < 0:
            raise RecordError(f"{label}: {name} = {value} is negative")
        if name.startswith("vol") and not math.isfinite(value):
            raise RecordError(f"{label}: {name} = {value} is not a finite volume")
    return {
        "structure": structure,
        "dice": _finite_or_none(float(values["dice"])),
        "iou": _finite_or_none(float(values["iou"])),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "hd95_mm": _finite_or_none(float(values["hd95_mm"])),
        "assd_mm": _finite_or_none(float(values["assd_mm"])),
        "vol_pred_ml": float(values["vol_pred_ml"]),
        "vol_ref_ml": float(values["vol_ref_ml"]),
    }


INDEX_VOLUMES = ("lv_edv_ml", "lv_esv_ml", "rv_edv_ml", "rv_esv_ml", "myo_mass_g")


def index_row(where: str, values: Mapping[str, object]) -> dict[str, object]:
    """Check cardiac indices (``CardiacIndices.as_dict()``: non-negative volumes and mass, a known phase source).

    Raises
    ------
    RecordError
        For a negative or non-finite volume or mass, or an unknown phase source.
    """
    for name in INDEX_VOLUMES:
        value = float(values[name])  # type: ignore[arg-type]
        if not math.isfinite(value) or value < 0:
            raise RecordError(f"{where}: {name} = {value} must be a non-negative number")
    row = dict(values)
    for name in ("lv_ef_pct", "rv_ef_pct"):
        if row.get(name) is not None and not math.isfinite(float(row[name])):  # type: ignore[arg-type]
            row[name] = None
    row["phase_source"] = member(PhaseSource, row["phase_source"], where, "phase source")
    return row
