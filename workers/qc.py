"""Quality-control flags of predicted label maps: pure functions, no references needed.

Length: one module on purpose: the flag names, thresholds, cited index limits and checks are one specification.

Every study gets its flags on the CPU worker (the evaluate stage), with or without reference
labels, so that a cohort of thousands can be triaged by opening only the masks that look wrong.
Each check returns :class:`QcFlag` rows (a flag name, the frame and structure it concerns or None,
the measured value, the threshold it crossed, a severity: 1 warning, 2 error, and a one-line
reason); nothing here reads files or knows the record.

The checks, on one frame's ACDC label map ``(x, y, z)`` with ``z`` the short-axis slice:

* ``missing_structure``: RV, MYO or LV has no voxel in the frame.
* ``missing_on_slice``: a structure is absent on a mid-ventricular slice (the middle third of the
  slices that hold any label) where the two others are present, between slices that hold it.
* ``pieces`` / ``far_piece``: a structure in more than one 3D connected piece
  (:func:`scipy.ndimage.label`, 26-connected): ``pieces`` when the volume outside its largest
  piece exceeds ``max_piece_ml``; ``far_piece`` when a piece other than the largest has its centre
  farther than ``max_piece_distance_mm`` from the heart's centre (the centroid, in mm with the
  voxel spacing, of the largest connected piece of all labels together).
* ``edge_slice``: labels on both end slices of the stack (the heart may be cut off): the labelled
  area of the end slice with less of it (the apical end), as a fraction of the largest labelled
  slice area, exceeds ``max_edge_area_fraction`` (labels on the basal end alone are usual).
* ``lv_not_enclosed``: on a mid-ventricular slice, the fraction of the LV cavity's in-plane border
  (the pixels just outside the cavity, 4-connected) that is myocardium is below
  ``min_enclosed_fraction`` (the worst slice is reported).
* ``uncertain``: the segmenter's per-frame uncertainty (mean normalised softmax entropy over the
  heart, in [0, 1]) above ``max_uncertainty``.
* ``low_predicted_dice``: a structure's predicted Dice in the frame (the segmenter's calibrated estimate
  of the mask's Dice against a reference, :mod:`workers.quality`) below ``min_predicted_dice``; none
  where the segmenter gave no predicted Dice (a model without a quality calibration).

And on a study's cardiac indices from the predicted masks:

* ``esv_ge_edv``: ESV >= EDV of the LV or the RV.
* ``implausible_index``: LVEF, RVEF, LV or RV EDV or LV mass outside :data:`INDEX_LIMITS`
  (BSA-indexed volumes and mass when height and weight are known).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from heartseg.labels import STRUCTURES, Phase, Structure
from heartseg.settings import Settings
from workers.indices import CardiacIndices
from workers.metrics import voxel_volume_ml

WARNING = 1
ERROR = 2


class Flag(enum.StrEnum):
    """The name of a QC flag, as the record keeps it (``qc_flags.flag``)."""

    MISSING_STRUCTURE = "missing_structure"
    MISSING_ON_SLICE = "missing_on_slice"
    PIECES = "pieces"
    FAR_PIECE = "far_piece"
    EDGE_SLICE = "edge_slice"
    LV_NOT_ENCLOSED = "lv_not_enclosed"
    UNCERTAIN = "uncertain"
    LOW_PREDICTED_DICE = "low_predicted_dice"
    ESV_GE_EDV = "esv_ge_edv"
    IMPLAUSIBLE_INDEX = "implausible_index"


@dataclass(frozen=True)
class QcFlag:
    """One thing that looks wrong in a study's predicted masks."""

    flag: Flag
    frame: int | None
    structure: Structure | None
    value: float
    threshold: float
    severity: int
    reason: str

    def as_row(self) -> dict[str, object]:
        """The columns of ``qc_flags`` (without the study and model)."""
        return {"flag": self.flag.value, "frame": self.frame, "structure": self.structure, "value": self.value,
                "threshold": self.threshold, "severity": self.severity, "reason": self.reason}


@dataclass(frozen=True)
class QcThresholds:
    """The thresholds of the geometric, uncertainty and predicted-Dice checks (settings ``HEARTSEG_QC_*``)."""

    max_piece_ml: float = 5.0
    max_piece_distance_mm: float = 80.0
    max_edge_area_fraction: float = 0.5
    min_enclosed_fraction: float = 0.8
    max_uncertainty: float = 0.1
    min_predicted_dice: float = 0.8

    @classmethod
    def from_settings(cls, settings: Settings) -> QcThresholds:
        """The thresholds a process's settings give."""
        return cls(max_piece_ml=settings.qc_max_piece_ml, max_piece_distance_mm=settings.qc_max_piece_distance_mm,
                   max_edge_area_fraction=settings.qc_max_edge_area_fraction,
                   min_enclosed_fraction=settings.qc_min_enclosed_fraction,
                   max_uncertainty=settings.qc_max_uncertainty,
                   min_predicted_dice=settings.qc_min_predicted_dice)


@dataclass(frozen=True)
class IndexLimits:
    """The plausible range of one cardiac index, and whether it applies when BSA is known or unknown."""

    field: str
    label: str
    unit: str
    low: float
    high: float
    structure: Structure


#: Plausible, not normal, ranges of the cardiac indices (flag what cannot be a heart, not disease).
#:
#: Reference: N. Kawel-Boehm et al., "Reference ranges ("normal values") for cardiovascular magnetic
#: resonance (CMR) in adults and children: 2020 update", J Cardiovasc Magn Reson 22:87 (2020),
#: doi:10.1186/s12968-020-00683-3 (adult bSSFP tables of LV and RV volumes, function and mass).
#: Its normal adult ranges (for example LVEF of roughly 55 to 75 %) lie well inside the limits below,
#: which are widened on purpose so that the pathology groups of ACDC (dilated cardiomyopathy with an
#: EF near 10 % and EDVs several times normal, hypertrophic cardiomyopathy with twice the normal mass,
#: an abnormal RV) are not flagged: an index outside them is a segmentation error, not a diagnosis.
#: Absolute volumes and mass are checked when the body surface area is unknown, the BSA-indexed ones
#: (Mosteller) when height and weight are known.
INDEX_LIMITS: tuple[IndexLimits, ...] = (
    IndexLimits("lv_ef_pct", "LVEF", "%", 1.0, 90.0, Structure.LV),
    IndexLimits("rv_ef_pct", "RVEF", "%", 1.0, 90.0, Structure.RV),
)
ABSOLUTE_LIMITS: tuple[IndexLimits, ...] = (
    IndexLimits("lv_edv_ml", "LV EDV", "ml", 30.0, 700.0, Structure.LV),
    IndexLimits("rv_edv_ml", "RV EDV", "ml", 30.0, 700.0, Structure.RV),
    IndexLimits("myo_mass_g", "LV mass", "g", 25.0, 500.0, Structure.MYO),
)
INDEXED_LIMITS: tuple[IndexLimits, ...] = (
    IndexLimits("lv_edv_index_ml_m2", "LV EDV/BSA", "ml/m2", 15.0, 350.0, Structure.LV),
    IndexLimits("rv_edv_index_ml_m2", "RV EDV/BSA", "ml/m2", 15.0, 350.0, Structure.RV),
    IndexLimits("myo_mass_index_g_m2", "LV mass/BSA", "g/m2", 15.0, 250.0, Structure.MYO),
)

_FULL_3D = np.ones((3, 3, 3), dtype=bool)
_CROSS_2D = ndimage.generate_binary_structure(2, 1)


def _where(frame: int | None) -> str:
    return "" if frame is None else f"frame {frame}: "


def _slices_text(slices: Sequence[int]) -> str:
    return ("slice " if len(slices) == 1 else "slices ") + ", ".join(str(s + 1) for s in slices)


def labelled_slices(labels: np.ndarray) -> np.ndarray:
    """Indices (0-based) of the slices (last axis) that hold any label."""
    return np.flatnonzero(np.any(labels > 0, axis=(0, 1)))


def mid_ventricular_slices(labels: np.ndarray) -> range:
    """The middle third of the slice range that holds any label (0-based; empty when nothing is labelled).

    With ``n`` labelled slices from ``first`` to ``last``, the range drops ``n // 3`` slices at each end,
    so it holds at least one slice and, from 3 slices on, never the base or the apex.
    """
    present = labelled_slices(labels)
    if present.size == 0:
        return range(0)
    first, last = int(present[0]), int(present[-1])
    cut = (last - first + 1) // 3
    return range(first + cut, last - cut + 1)


def heart_centre_mm(labels: np.ndarray, spacing: Sequence[float]) -> np.ndarray | None:
    """Centroid in mm of the largest 26-connected piece of all labels together; None without labels."""
    components, n = ndimage.label(labels > 0, structure=_FULL_3D)
    if n == 0:
        return None
    sizes = np.bincount(components.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    centre = ndimage.center_of_mass(components == largest)
    return np.asarray(centre, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)


def missing_flags(labels: np.ndarray, frame: int | None = None) -> list[QcFlag]:
    """``missing_structure`` for each structure without a voxel; ``missing_on_slice`` for each structure absent
    on mid-ventricular slices where both other structures are present and that lie between slices holding it
    (a gap: a structure that ends early, as the RV does towards the apex, is not flagged); the value is the
    number of such slices."""
    flags: list[QcFlag] = []
    present = {s: np.any(labels == s.label, axis=(0, 1)) for s in STRUCTURES}
    for structure in STRUCTURES:
        if not present[structure].any():
            flags.append(QcFlag(Flag.MISSING_STRUCTURE, frame, structure, 0.0, 0.0, ERROR,
                                f"{_where(frame)}{structure.value} missing: no {structure.description} voxel"))
    mid = mid_ventricular_slices(labels)
    for structure in STRUCTURES:
        if not present[structure].any():
            continue
        others = [o for o in STRUCTURES if o is not structure]
        where = np.flatnonzero(present[structure])
        gaps = [z for z in mid if not present[structure][z] and all(present[o][z] for o in others)
                and where[0] < z < where[-1]]
        if gaps:
            flags.append(QcFlag(Flag.MISSING_ON_SLICE, frame, structure, float(len(gaps)), 0.0, ERROR,
                                f"{_where(frame)}{structure.value} missing on mid-ventricular {_slices_text(gaps)} "
                                f"where the other structures are present"))
    return flags


@dataclass(frozen=True)
class Pieces:
    """The connected pieces of one structure: how many, the volume outside the largest, the farthest one."""

    n: int
    outside_largest_ml: float
    farthest_mm: float
    """Distance from the heart's centre to the centroid of the farthest piece other than the largest (0 for one
    piece)."""


def structure_pieces(labels: np.ndarray, spacing: Sequence[float], structure: Structure,
                     centre_mm: np.ndarray | None = None) -> Pieces:
    """The 26-connected pieces of ``structure`` (``centre_mm``: the heart's centre, found when not given)."""
    mask = labels == structure.label
    components, n = ndimage.label(mask, structure=_FULL_3D)
    if n <= 1:
        return Pieces(n, 0.0, 0.0)
    sizes = np.bincount(components.ravel())[1:]
    largest = int(np.argmax(sizes))
    outside = (int(sizes.sum()) - int(sizes[largest])) * voxel_volume_ml(spacing)
    if centre_mm is None:
        centre_mm = heart_centre_mm(labels, spacing)
    others = [i + 1 for i in range(n) if i != largest]
    centroids = np.asarray(ndimage.center_of_mass(mask, components, others), dtype=np.float64)
    scale = np.asarray(spacing, dtype=np.float64)
    assert centre_mm is not None  # a structure with pieces makes a heart
    farthest = float(np.max(np.linalg.norm(centroids * scale - centre_mm, axis=1)))
    return Pieces(n, outside, farthest)


def piece_flags(labels: np.ndarray, spacing: Sequence[float], frame: int | None = None, *,
                max_piece_ml: float = QcThresholds.max_piece_ml,
                max_piece_distance_mm: float = QcThresholds.max_piece_distance_mm) -> list[QcFlag]:
    """``pieces`` (volume outside the largest piece above ``max_piece_ml``) and ``far_piece`` (a piece's centre
    farther than ``max_piece_distance_mm`` from the heart's centre), per structure."""
    flags: list[QcFlag] = []
    centre = heart_centre_mm(labels, spacing)
    for structure in STRUCTURES:
        pieces = structure_pieces(labels, spacing, structure, centre)
        if pieces.n <= 1:
            continue
        what = (f"{_where(frame)}{structure.value} in {pieces.n} pieces, {pieces.outside_largest_ml:.1f} ml outside "
                f"the largest, the farthest {pieces.farthest_mm:.0f} mm from the heart's centre")
        if pieces.outside_largest_ml > max_piece_ml:
            flags.append(QcFlag(Flag.PIECES, frame, structure, pieces.outside_largest_ml, max_piece_ml, WARNING,
                                f"{what} (over {max_piece_ml:g} ml)"))
        if pieces.farthest_mm > max_piece_distance_mm:
            flags.append(QcFlag(Flag.FAR_PIECE, frame, structure, pieces.farthest_mm, max_piece_distance_mm, WARNING,
                                f"{what} (over {max_piece_distance_mm:g} mm)"))
    return flags


def edge_area_fractions(labels: np.ndarray) -> tuple[float, float]:
    """Labelled area of the first and of the last slice, as fractions of the largest labelled slice area."""
    areas = np.count_nonzero(labels > 0, axis=(0, 1))
    largest = int(areas.max()) if areas.size else 0
    if largest == 0:
        return 0.0, 0.0
    return int(areas[0]) / largest, int(areas[-1]) / largest


def edge_slice_flags(labels: np.ndarray, frame: int | None = None, *,
                     max_edge_area_fraction: float = QcThresholds.max_edge_area_fraction) -> list[QcFlag]:
    """``edge_slice`` when the heart reaches both ends of the stack: the end slice with the smaller labelled area
    (the apical end: the base is the wider) still holds over ``max_edge_area_fraction`` of the largest labelled
    slice area, so the stack may not cover the whole heart.

    Labels on one end slice alone are usual (short-axis stacks start at the base, where the heart is widest)
    and are not flagged."""
    first, last = edge_area_fractions(labels)
    n = labels.shape[-1]
    name, index, fraction = ("first", 0, first) if n > 1 and first <= last else ("last", n - 1, last)
    if n == 1 or fraction <= max_edge_area_fraction:
        return []
    other = "last" if name == "first" else "first"
    return [QcFlag(Flag.EDGE_SLICE, frame, None, fraction, max_edge_area_fraction, WARNING,
                   f"{_where(frame)}labels on both end slices, {fraction:.0%} of the largest slice's area on the "
                   f"{name} ({index + 1} of {n}) and more on the {other}: the heart may be cut off")]


def enclosed_fractions(labels: np.ndarray, slices: Iterable[int] | None = None) -> dict[int, float]:
    """Per slice (0-based, default the mid-ventricular ones) holding LV cavity: the fraction of the pixels just
    outside the cavity in-plane (4-connected) that are myocardium."""
    fractions: dict[int, float] = {}
    for z in mid_ventricular_slices(labels) if slices is None else slices:
        cavity = labels[:, :, z] == Structure.LV.label
        if not cavity.any():
            continue
        ring = ndimage.binary_dilation(cavity, structure=_CROSS_2D) & ~cavity
        if not ring.any():  # the cavity fills the slice
            fractions[z] = 0.0
            continue
        fractions[z] = float(np.count_nonzero(ring & (labels[:, :, z] == Structure.MYO.label)) / np.count_nonzero(ring))
    return fractions


def enclosure_flags(labels: np.ndarray, frame: int | None = None, *,
                    min_enclosed_fraction: float = QcThresholds.min_enclosed_fraction) -> list[QcFlag]:
    """``lv_not_enclosed`` when a mid-ventricular slice's LV cavity border is less than ``min_enclosed_fraction``
    myocardium (the worst slice is the value; the reason names every slice below)."""
    fractions = enclosed_fractions(labels)
    below = sorted(z for z, f in fractions.items() if f < min_enclosed_fraction)
    if not below:
        return []
    worst = min(below, key=lambda z: fractions[z])
    return [QcFlag(Flag.LV_NOT_ENCLOSED, frame, Structure.LV, fractions[worst], min_enclosed_fraction, ERROR,
                   f"{_where(frame)}LV cavity not enclosed by myocardium on mid-ventricular {_slices_text(below)}: "
                   f"{fractions[worst]:.0%} of its border is myocardium on slice {worst + 1} "
                   f"(below {min_enclosed_fraction:.0%})")]


def uncertainty_flags(uncertainty: float | None, frame: int | None = None, *,
                      max_uncertainty: float = QcThresholds.max_uncertainty) -> list[QcFlag]:
    """``uncertain`` when the segmenter's uncertainty of the frame is above ``max_uncertainty`` (none when unknown)."""
    if uncertainty is None or not math.isfinite(uncertainty) or uncertainty <= max_uncertainty:
        return []
    return [QcFlag(Flag.UNCERTAIN, frame, None, float(uncertainty), max_uncertainty, WARNING,
                   f"{_where(frame)}uncertain segmentation: mean normalised entropy {uncertainty:.3f} over the "
                   f"heart (above {max_uncertainty:g})")]


def predicted_dice_flags(predicted_dice: Mapping[Structure, float | None] | None, frame: int | None = None,
                         phase: Phase | None = None, *,
                         min_predicted_dice: float = QcThresholds.min_predicted_dice) -> list[QcFlag]:
    """``low_predicted_dice`` for each structure whose predicted Dice in the frame is below ``min_predicted_dice``
    (in label order; none where it is unknown). The reason names the phase (``ES LV: ...``) of an ED or ES frame,
    else the frame."""
    where = (f"{phase.value} " if phase is not None and phase in (Phase.ED, Phase.ES)
             else "" if frame is None else f"frame {frame} ")
    flags: list[QcFlag] = []
    for structure in STRUCTURES:
        value = (predicted_dice or {}).get(structure)
        if value is None or not math.isfinite(value) or value >= min_predicted_dice:
            continue
        flags.append(QcFlag(Flag.LOW_PREDICTED_DICE, frame, structure, float(value), min_predicted_dice, ERROR,
                            f"{where}{structure.value}: predicted Dice {value:.2f} (below {min_predicted_dice:g})"))
    return flags


def frame_flags(labels: np.ndarray, spacing: Sequence[float], frame: int | None = None,
                thresholds: QcThresholds | None = None, uncertainty: float | None = None,
                predicted_dice: Mapping[Structure, float | None] | None = None,
                phase: Phase | None = None) -> list[QcFlag]:
    """Every per-frame check of one predicted label map (``predicted_dice``: the segmenter's per structure, with
    the frame's ``phase`` for the reasons)."""
    t = thresholds or QcThresholds()
    return [
        *missing_flags(labels, frame),
        *piece_flags(labels, spacing, frame, max_piece_ml=t.max_piece_ml,
                     max_piece_distance_mm=t.max_piece_distance_mm),
        *edge_slice_flags(labels, frame, max_edge_area_fraction=t.max_edge_area_fraction),
        *enclosure_flags(labels, frame, min_enclosed_fraction=t.min_enclosed_fraction),
        *uncertainty_flags(uncertainty, frame, max_uncertainty=t.max_uncertainty),
        *predicted_dice_flags(predicted_dice, frame, phase, min_predicted_dice=t.min_predicted_dice),
    ]


def index_flags(indices: CardiacIndices | Mapping[str, object]) -> list[QcFlag]:
    """``esv_ge_edv`` and ``implausible_index`` of a study's cardiac indices (from the predicted masks)."""
    values = indices.as_dict() if isinstance(indices, CardiacIndices) else dict(indices)

    def number(name: str) -> float | None:
        value = values.get(name)
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else None

    flags: list[QcFlag] = []
    for side, structure in (("lv", Structure.LV), ("rv", Structure.RV)):
        edv, esv = number(f"{side}_edv_ml"), number(f"{side}_esv_ml")
        if edv is not None and esv is not None and edv > 0 and esv >= edv:
            flags.append(QcFlag(Flag.ESV_GE_EDV, None, structure, esv, edv, ERROR,
                                f"{side.upper()} ESV {esv:.1f} ml >= EDV {edv:.1f} ml"))
    indexed = number("bsa_m2") is not None
    for limits in (*INDEX_LIMITS, *(INDEXED_LIMITS if indexed else ABSOLUTE_LIMITS)):
        value = number(limits.field)
        if value is None or limits.low <= value <= limits.high:
            continue
        bound = limits.low if value < limits.low else limits.high
        flags.append(QcFlag(Flag.IMPLAUSIBLE_INDEX, None, limits.structure, value, bound, ERROR,
                            f"{limits.label} {value:.1f} {limits.unit} outside the plausible "
                            f"{limits.low:g}-{limits.high:g} {limits.unit}"))
    return flags


def study_flags(predicted: Mapping[int, np.ndarray], spacing: Sequence[float],
                indices: CardiacIndices | Mapping[str, object] | None = None,
                uncertainties: Mapping[int, float | None] | None = None,
                thresholds: QcThresholds | None = None,
                predicted_dice: Mapping[int, Mapping[Structure, float | None]] | None = None,
                phases: Mapping[int, Phase] | None = None) -> list[QcFlag]:
    """Every flag of a study: each frame's checks (by frame number), then its indices' (when computed).

    ``uncertainties`` and ``predicted_dice`` are what the segmenter measured, by frame; ``phases`` name the ED
    and ES frames in the reasons."""
    uncertainties, predicted_dice, phases = uncertainties or {}, predicted_dice or {}, phases or {}
    flags = [flag for frame, labels in sorted(predicted.items())
             for flag in frame_flags(labels, spacing, frame, thresholds, uncertainties.get(frame),
                                     predicted_dice.get(frame), phases.get(frame))]
    if indices is not None:
        flags += index_flags(indices)
    return flags
