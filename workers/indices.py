"""Cardiac indices from ventricular label maps: pure functions on arrays and spacing.

Definitions
-----------
* EDV, ESV (ml): cavity volume (LV label 3, RV label 1) at end-diastole and end-systole.
* SV = EDV - ESV (ml); EF = SV / EDV x 100 (%).
* LV myocardial mass (g) = myocardium volume (label 2) at ED x 1.05 g/ml.
* BSA (m^2), Mosteller: sqrt(height_cm x weight_kg / 3600); indexed values divide by it.
* Cardiac output (l/min) = SV x heart rate / 1000, where a heart rate is given.

ED and ES: the frames a source states (ACDC ``Info.cfg``), or else, for a cine with
every phase segmented, the phase of largest (ED) and smallest (ES) LV cavity volume.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from heartseg.enums import PhaseSource
from heartseg.labels import Structure
from workers.metrics import volume_ml

#: Myocardial tissue density used for LV mass (g/ml).
MYOCARDIAL_DENSITY_G_PER_ML = 1.05


@dataclass(frozen=True)
class CardiacIndices:
    """Ventricular volumes and function of one study from one set of label maps."""

    ed_frame: int
    es_frame: int
    phase_source: PhaseSource
    lv_edv_ml: float
    lv_esv_ml: float
    lv_sv_ml: float
    lv_ef_pct: float
    rv_edv_ml: float
    rv_esv_ml: float
    rv_sv_ml: float
    rv_ef_pct: float
    myo_mass_g: float
    bsa_m2: float | None = None
    lv_edv_index_ml_m2: float | None = None
    lv_esv_index_ml_m2: float | None = None
    rv_edv_index_ml_m2: float | None = None
    rv_esv_index_ml_m2: float | None = None
    myo_mass_index_g_m2: float | None = None
    lv_cardiac_output_l_min: float | None = None

    def as_dict(self) -> dict[str, object]:
        """The fields as a plain dictionary."""
        return asdict(self)


def bsa_mosteller(height_cm: float, weight_kg: float) -> float:
    """Body surface area in m^2 by Mosteller's formula."""
    if height_cm <= 0 or weight_kg <= 0:
        raise ValueError(f"height and weight must be positive, got {height_cm} cm, {weight_kg} kg")
    return math.sqrt(height_cm * weight_kg / 3600.0)


def ejection_fraction(edv_ml: float, esv_ml: float) -> float:
    """EF in % = (EDV - ESV) / EDV x 100; NaN when EDV is 0."""
    return math.nan if edv_ml <= 0 else (edv_ml - esv_ml) / edv_ml * 100.0


def find_ed_es(lv_volumes_ml: Mapping[int, float]) -> tuple[int, int]:
    """ED = frame of largest, ES = frame of smallest LV cavity volume (ties: lowest frame number)."""
    if len(lv_volumes_ml) < 2:
        raise ValueError("finding ED and ES needs at least two segmented frames")
    frames = sorted(lv_volumes_ml)
    ed = max(frames, key=lambda f: (lv_volumes_ml[f], -f))
    es = min(frames, key=lambda f: (lv_volumes_ml[f], f))
    return ed, es


def cardiac_indices(
    labels_by_frame: Mapping[int, np.ndarray],
    spacing: Sequence[float],
    *,
    ed_frame: int | None = None,
    es_frame: int | None = None,
    height_cm: float | None = None,
    weight_kg: float | None = None,
    heart_rate_bpm: float | None = None,
) -> CardiacIndices:
    """Compute the cardiac indices of a study.

    Parameters
    ----------
    labels_by_frame
        ACDC label maps keyed by 1-based frame number: at least the ED and ES frames, or
        every phase of a cine when ED and ES are to be found.
    spacing
        Voxel size in mm.
    ed_frame, es_frame
        The stated ED and ES frames; when either is None both are found from LV volumes.
    height_cm, weight_kg
        For BSA and the indexed values (both needed).
    heart_rate_bpm
        For cardiac output.

    Raises
    ------
    ValueError
        If a stated frame has no label map, or ED/ES must be found from fewer than two frames.
    """
    def vol(frame: int, structure: Structure) -> float:
        return volume_ml(labels_by_frame[frame] == structure.label, spacing)

    if ed_frame is not None and es_frame is not None:
        missing = [f for f in (ed_frame, es_frame) if f not in labels_by_frame]
        if missing:
            raise ValueError(f"no label map for stated frame(s) {missing}; have {sorted(labels_by_frame)}")
        source = PhaseSource.STATED
    else:
        lv = {f: vol(f, Structure.LV) for f in labels_by_frame}
        ed_frame, es_frame = find_ed_es(lv)
        source = PhaseSource.LV_VOLUME

    lv_edv, lv_esv = vol(ed_frame, Structure.LV), vol(es_frame, Structure.LV)
    rv_edv, rv_esv = vol(ed_frame, Structure.RV), vol(es_frame, Structure.RV)
    mass = vol(ed_frame, Structure.MYO) * MYOCARDIAL_DENSITY_G_PER_ML
    bsa = bsa_mosteller(height_cm, weight_kg) if height_cm and weight_kg else None

    def indexed(value: float) -> float | None:
        return None if bsa is None else value / bsa

    return CardiacIndices(
        ed_frame=ed_frame,
        es_frame=es_frame,
        phase_source=source,
        lv_edv_ml=lv_edv,
        lv_esv_ml=lv_esv,
        lv_sv_ml=lv_edv - lv_esv,
        lv_ef_pct=ejection_fraction(lv_edv, lv_esv),
        rv_edv_ml=rv_edv,
        rv_esv_ml=rv_esv,
        rv_sv_ml=rv_edv - rv_esv,
        rv_ef_pct=ejection_fraction(rv_edv, rv_esv),
        myo_mass_g=mass,
        bsa_m2=bsa,
        lv_edv_index_ml_m2=indexed(lv_edv),
        lv_esv_index_ml_m2=indexed(lv_esv),
        rv_edv_index_ml_m2=indexed(rv_edv),
        rv_esv_index_ml_m2=indexed(rv_esv),
        myo_mass_index_g_m2=indexed(mass),
        lv_cardiac_output_l_min=None if heart_rate_bpm is None else (lv_edv - lv_esv) * heart_rate_bpm / 1000.0,
    )
