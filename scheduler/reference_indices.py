"""Reference cardiac indices of an ACDC cohort, summarised by pathology group."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from heartseg.errors import StudyError
from heartseg.studies.acdc import is_acdc_patient, load_acdc_patient
from workers.indices import CardiacIndices, cardiac_indices


@dataclass(frozen=True)
class PatientIndices:
    """One patient's indices from its reference label maps, or why there are none."""

    patient: str
    group: str | None
    indices: CardiacIndices | None = None
    error: str | None = None


def acdc_patient_folders(root: Path) -> list[Path]:
    """The ACDC patient folders directly inside ``root``, sorted by name."""
    if not root.is_dir():
        raise StudyError(root, "folder not found")
    return sorted(p for p in root.iterdir() if p.is_dir() and is_acdc_patient(p))


def reference_indices(
    folders: list[Path], on_patient: Callable[[str], None] | None = None
) -> Iterator[PatientIndices]:
    """Cardiac indices of each patient from the reference masks of its stated ED and ES frames."""
    for folder in folders:
        if on_patient is not None:
            on_patient(folder.name)
        try:
            study = load_acdc_patient(folder, cine=False)
            labels = {f.number: f.reference for f in study.frames_with_reference() if f.reference is not None}
            indices = cardiac_indices(
                labels,
                study.spacing,
                ed_frame=study.ed,
                es_frame=study.es,
                height_cm=study.info.height_cm,
                weight_kg=study.info.weight_kg,
            )
        except (StudyError, ValueError) as exc:
            yield PatientIndices(folder.name, None, error=str(exc))
            continue
        yield PatientIndices(folder.name, study.info.group, indices)


@dataclass(frozen=True)
class GroupSummary:
    """Mean and SD of the main indices over one group."""

    group: str
    n: int
    lv_ef: tuple[float, float]
    lv_edv: tuple[float, float]
    rv_ef: tuple[float, float]
    rv_edv: tuple[float, float]
    myo_mass: tuple[float, float]


def summarize_by_group(results: list[PatientIndices]) -> list[GroupSummary]:
    """Mean and SD per group of LV/RV EF and EDV and myocardial mass."""
    by_group: dict[str, list[CardiacIndices]] = defaultdict(list)
    for result in results:
        if result.indices is not None:
            by_group[result.group or "unknown"].append(result.indices)

    def mean_sd(values: list[float]) -> tuple[float, float]:
        values = [v for v in values if math.isfinite(v)]
        if not values:
            return math.nan, math.nan
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan

    return [
        GroupSummary(
            group=group,
            n=len(rows),
            lv_ef=mean_sd([r.lv_ef_pct for r in rows]),
            lv_edv=mean_sd([r.lv_edv_ml for r in rows]),
            rv_ef=mean_sd([r.rv_ef_pct for r in rows]),
            rv_edv=mean_sd([r.rv_edv_ml for r in rows]),
            myo_mass=mean_sd([r.myo_mass_g for r in rows]),
        )
        for group, rows in sorted(by_group.items())
    ]
