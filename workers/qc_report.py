"""How well the QC flags find bad segmentations: writes ``docs/qc.md`` (and ``docs/qc-frames.csv``).

``python -m workers.qc_report`` segments the ED and ES frames of the 20 validation patients (never
trained on) and of a phantom cohort with the shipped model on the CPU, mirroring off (to save time),
computes each frame's Dice against its reference and the QC flags of :mod:`workers.qc` with the default
thresholds, and reports which share of the frames with a Dice below 0.8 (any structure) the flags catch
and how many good frames they flag. Every number in the page is computed by the run that writes it.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from heartseg.labels import STRUCTURES
from heartseg.phantom import write_cohort
from heartseg.settings import Settings, get_settings
from heartseg.studies import open_study
from heartseg.studies.model import Study
from workers.indices import cardiac_indices
from workers.metrics import compare_label_maps
from workers.qc import ABSOLUTE_LIMITS, ERROR, INDEX_LIMITS, INDEXED_LIMITS, Flag, QcFlag, QcThresholds, study_flags
from workers.quality import FrameQuality

#: A frame is bad when the Dice of any structure is below this.
BAD_DICE = 0.8
PHANTOM_SEED = 2029
UNCERTAINTY_SWEEP = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4)


@dataclass
class FrameResult:
    """One segmented frame: its worst Dice and the flags that name it (or its study)."""

    cohort: str
    patient: str
    group: str
    frame: int
    phase: str
    dice: dict[str, float]
    uncertainty: float | None
    frame_flags: list[QcFlag] = field(default_factory=list)
    study_flags: list[QcFlag] = field(default_factory=list)
    reference_flags: list[QcFlag] = field(default_factory=list)

    @property
    def min_dice(self) -> float:
        values = [d for d in self.dice.values() if not math.isnan(d)]
        return min(values) if values else math.nan

    @property
    def bad(self) -> bool:
        return self.min_dice < BAD_DICE


def _flags_of(study: Study, labels: dict[int, np.ndarray], uncertainties: dict[int, float | None],
              thresholds: QcThresholds) -> list[QcFlag]:
    indices = None
    if study.ed in labels and study.es in labels:
        indices = cardiac_indices(labels, study.spacing, ed_frame=study.ed, es_frame=study.es,
                                  height_cm=study.info.height_cm, weight_kg=study.info.weight_kg)
    return study_flags(labels, study.spacing, indices, uncertainties, thresholds)


def evaluate_cohort(cohort: str, folders: Sequence[Path], segment_frames: Callable[..., list[np.ndarray]],
                    thresholds: QcThresholds) -> tuple[list[FrameResult], bool]:
    """Segment each study's frames with references, evaluate and flag them; also whether uncertainty was given."""
    results: list[FrameResult] = []
    given = False
    for folder in folders:
        study = open_study(folder, cine=False)
        frames = [f for f in study.frames_with_reference() if f.reference is not None]
        uncertainties: dict[int, float | None] = {}

        def on_labels(index: int, labels: np.ndarray, quality: FrameQuality | None = None, frames: list = frames,
                      uncertainties: dict[int, float | None] = uncertainties) -> None:
            uncertainties[frames[index].number] = None if quality is None else quality.uncertainty

        predicted = dict(zip((f.number for f in frames), segment_frames([f.image for f in frames], study.spacing,
                                                                         on_labels), strict=True))
        given = given or any(u is not None for u in uncertainties.values())
        flags = _flags_of(study, predicted, uncertainties, thresholds)
        references = {f.number: f.reference for f in frames if f.reference is not None}
        reference_flags = _flags_of(study, references, {}, thresholds)
        for frame in frames:
            assert frame.reference is not None
            dice = {s.value: m.dice for s, m in compare_label_maps(predicted[frame.number], frame.reference,
                                                                  study.spacing).items()}
            results.append(FrameResult(
                cohort, study.info.patient_id, study.info.group or "", frame.number,
                study.phase_of(frame.number).value, dice, uncertainties.get(frame.number),
                [f for f in flags if f.frame == frame.number], [f for f in flags if f.frame is None],
                [f for f in reference_flags if f.frame == frame.number]))
    return results, given


def _share(part: int, whole: int) -> str:
    return f"{part} of {whole}" + (f" ({part / whole:.0%})" if whole else "")


def _flagged(result: FrameResult, *, study: bool, errors_only: bool = False,
             keep: Callable[[QcFlag], bool] = lambda f: True) -> bool:
    flags = [*result.frame_flags, *(result.study_flags if study else [])]
    return any(keep(f) and (f.severity == ERROR or not errors_only) for f in flags)


def summary_rows(results: Sequence[FrameResult], keep: Callable[[QcFlag], bool] = lambda f: True) -> list[str]:
    """Markdown rows: bad frames caught and good frames flagged by the flags naming the frame or its study:
    every flag, every flag but ``edge_slice``, the errors only."""
    bad = [r for r in results if r.bad]
    good = [r for r in results if not r.bad]
    rows = []
    for label, errors_only, also in (("every flag", False, keep),
                                     ("every flag but `edge_slice`", False,
                                      lambda f: keep(f) and f.flag is not Flag.EDGE_SLICE),
                                     ("errors only (severity 2)", True, keep)):
        caught = sum(_flagged(r, study=True, errors_only=errors_only, keep=also) for r in bad)
        false = sum(_flagged(r, study=True, errors_only=errors_only, keep=also) for r in good)
        rows.append(f"| {label} | {_share(caught, len(bad))} | {_share(false, len(good))} |")
    return rows


def flag_rows(results: Sequence[FrameResult]) -> list[str]:
    """Markdown rows: per flag, the frames it names among the bad, the good and the reference label maps."""
    bad = [r for r in results if r.bad]
    good = [r for r in results if not r.bad]
    rows = []
    for flag in Flag:
        def has(r: FrameResult, flag: Flag = flag) -> bool:
            return any(f.flag is flag for f in (*r.frame_flags, *r.study_flags))

        on_refs = sum(any(f.flag is flag for f in r.reference_flags) for r in results)
        rows.append(f"| `{flag.value}` | {sum(map(has, bad))} | {sum(map(has, good))} | {on_refs} |")
    return rows


def uncertainty_rows(results: Sequence[FrameResult]) -> list[str]:
    """Markdown rows: the uncertainty flag alone at several thresholds."""
    bad = [r for r in results if r.bad and r.uncertainty is not None]
    good = [r for r in results if not r.bad and r.uncertainty is not None]
    rows = []
    for threshold in UNCERTAINTY_SWEEP:
        caught = sum(r.uncertainty is not None and r.uncertainty > threshold for r in bad)
        false = sum(r.uncertainty is not None and r.uncertainty > threshold for r in good)
        rows.append(f"| {threshold:g} | {_share(caught, len(bad))} | {_share(false, len(good))} |")
    return rows


def _median(values: Iterable[float | None]) -> str:
    kept = [v for v in values if v is not None]
    return f"{statistics.median(kept):.3f}" if kept else "n/a"


def cohort_section(title: str, results: Sequence[FrameResult], with_uncertainty: bool) -> list[str]:
    bad = [r for r in results if r.bad]
    lines = [f"### {title}", "",
             f"{len(results)} frames, {len(bad)} with a Dice below {BAD_DICE:g} for at least one structure.", "",
             "| counting | Dice < 0.8 frames caught | good frames flagged |", "|---|---|---|",
             *summary_rows(results)]
    if with_uncertainty:
        lines += ["", "Without the `uncertain` flag:", "",
                  "| counting | Dice < 0.8 frames caught | good frames flagged |", "|---|---|---|",
                  *summary_rows(results, keep=lambda f: f.flag is not Flag.UNCERTAIN)]
    lines += ["", "Per flag, the frames it names (a study's flag names both its frames); the last column runs the "
                  "same checks on the reference label maps:", "",
              "| flag | Dice < 0.8 frames | good frames | reference frames |", "|---|---|---|---|", *flag_rows(results)]
    if with_uncertainty:
        lines += ["", f"Uncertainty: median {_median(r.uncertainty for r in bad)} on the Dice < 0.8 frames, "
                      f"{_median(r.uncertainty for r in results if not r.bad)} on the good ones. "
                      "The `uncertain` flag alone at other thresholds:", "",
                  "| threshold | Dice < 0.8 frames caught | good frames flagged |", "|---|---|---|",
                  *uncertainty_rows(results)]
    missed = [r for r in bad if not _flagged(r, study=True)]
    if missed:
        lines += ["", "Dice < 0.8 frames no flag names: " + ", ".join(
            f"{r.patient} frame {r.frame} ({r.phase}, {min(r.dice, key=lambda k: r.dice[k])} "
            f"Dice {r.min_dice:.2f})" for r in missed) + "."]
    return [*lines, ""]


def write_csv(results: Sequence[FrameResult], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cohort", "patient", "group", "frame", "phase", *(f"dice_{s.value}" for s in STRUCTURES),
                         "uncertainty", "frame_flags", "study_flags", "reasons"])
        for r in results:
            writer.writerow([r.cohort, r.patient, r.group, r.frame, r.phase,
                             *(f"{r.dice[s.value]:.4f}" for s in STRUCTURES),
                             "" if r.uncertainty is None else f"{r.uncertainty:.4f}",
                             " ".join(f.flag.value for f in r.frame_flags),
                             " ".join(f.flag.value for f in r.study_flags),
                             "; ".join(f.reason for f in (*r.frame_flags, *r.study_flags))])


def _limits_rows() -> list[str]:
    rows = []
    for limits, when in ((INDEX_LIMITS, "always"), (ABSOLUTE_LIMITS, "height or weight unknown"),
                         (INDEXED_LIMITS, "height and weight known (BSA, Mosteller)")):
        rows += [f"| {x.label} | {x.low:g} to {x.high:g} {x.unit} | {when} |" for x in limits]
    return rows


def static_page(thresholds: QcThresholds) -> list[str]:
    """What each flag means, its default, how to query: from the code's own values."""
    t = thresholds
    return [
        "# QC flags", "",
        "Every study gets QC flags on the CPU worker (the evaluate stage), with or without reference labels, "
        "computed from its predicted masks (`workers/qc.py`), and recorded with its metrics before it is marked "
        "done. A flag names what looks wrong, the frame (none for a flag of the study's cardiac indices), the "
        "structure (when one), the value measured, the threshold it crossed, a severity (1 warning, 2 error) and "
        "a one-line reason. Re-evaluating a study replaces its flags.", "",
        "| flag | severity | means | default threshold (setting) |", "|---|---|---|---|",
        "| `missing_structure` | 2 | RV, MYO or LV has no voxel in the frame | none |",
        "| `missing_on_slice` | 2 | a structure absent on a mid-ventricular slice (middle third of the labelled "
        "slices) where both others are present, between slices that hold it (value: number of such slices) | "
        "none |",
        f"| `pieces` | 1 | a structure in several 3D connected pieces (26-connected) with more than the threshold "
        f"outside its largest piece (value: ml) | {t.max_piece_ml:g} ml (`HEARTSEG_QC_MAX_PIECE_ML`) |",
        f"| `far_piece` | 1 | a piece other than the largest centred farther from the heart's centre (centroid of "
        f"the largest connected piece of all labels, in mm with the voxel spacing) than the threshold | "
        f"{t.max_piece_distance_mm:g} mm (`HEARTSEG_QC_MAX_PIECE_DISTANCE_MM`) |",
        f"| `edge_slice` | 1 | labels on both end slices of the stack, the end slice with less of them (the apical "
        f"end) covering more than the threshold of the largest labelled slice area: the heart may be cut off "
        f"(labels on the basal end alone are usual) | {t.max_edge_area_fraction:g} "
        f"(`HEARTSEG_QC_MAX_EDGE_AREA_FRACTION`; 1 turns it off) |",
        f"| `lv_not_enclosed` | 2 | on a mid-ventricular slice, the share of the LV cavity's in-plane border "
        f"(pixels just outside it, 4-connected) that is myocardium is below the threshold (value: worst slice) | "
        f"{t.min_enclosed_fraction:g} (`HEARTSEG_QC_MIN_ENCLOSED_FRACTION`) |",
        f"| `uncertain` | 1 | the segmenter's uncertainty of the frame (mean normalised softmax entropy over the "
        f"voxels predicted as heart, 0 to 1, `masks.uncertainty`) above the threshold | {t.max_uncertainty:g} "
        f"(`HEARTSEG_QC_MAX_UNCERTAINTY`) |",
        "| `esv_ge_edv` | 2 | LV or RV ESV >= EDV (value: ESV, threshold: EDV) | none |",
        "| `implausible_index` | 2 | a cardiac index from the predicted masks outside the plausible range below "
        "(threshold: the bound crossed) | the table below |", "",
        "Plausible, not normal, ranges (`workers.qc.INDEX_LIMITS`, `ABSOLUTE_LIMITS`, `INDEXED_LIMITS`), set far "
        "outside the normal adult ranges of Kawel-Boehm et al., \"Reference ranges (normal values) for "
        "cardiovascular magnetic resonance (CMR) in adults and children: 2020 update\", J Cardiovasc Magn Reson "
        "22:87 (2020), so that the pathology groups of ACDC (dilated and hypertrophic cardiomyopathy, infarction, "
        "abnormal RV) are not flagged: an index outside them points at the segmentation, not at a disease.", "",
        "| index | plausible | checked when |", "|---|---|---|", *_limits_rows(), "",
        "## Querying", "",
        "View `run_qc`: one row per study of a run, with columns `run, study_id, patient_id, pathology_group, "
        "status, n_flags, severity` (the sum of the flags' severities, 0 when none) and `flags` (the reasons "
        "joined with `'; '`, errors first, `''` when none). The same SQL runs on PostgreSQL and SQLite:", "",
        "```sql", "SELECT patient_id, pathology_group, n_flags, severity, flags",
        "FROM run_qc WHERE run = 'demo-acdc-validation' AND n_flags > 0 ORDER BY severity DESC;", "```", "",
        "Table `qc_flags` keeps one row per flag (`study_id, model_id, frame, structure, flag, value, threshold, "
        "severity, reason`), e.g. how often each flag fires in a run:", "",
        "```sql", "SELECT q.flag, q.structure, COUNT(*) AS n, MAX(q.value) AS worst",
        "FROM qc_flags q JOIN studies s ON s.id = q.study_id JOIN runs r ON r.id = s.run_id",
        "WHERE r.name = 'demo-acdc-validation' GROUP BY q.flag, q.structure ORDER BY n DESC;", "```", "",
        "From Python: `db.queries.run_qc(engine, run)` returns the view's rows, most severe first.", "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phantoms", type=int, default=10, help=f"phantom patients (seed {PHANTOM_SEED})")
    parser.add_argument("--work", type=Path, default=Path("work/qc"))
    parser.add_argument("--out", type=Path, default=Path("docs/qc.md"))
    args = parser.parse_args()
    settings: Settings = get_settings().model_copy(update={"use_mirroring": False, "device": "cpu"})
    from workers.inference.predictor import Segmenter
    from workers.training.split import VALIDATION_PATIENTS

    segmenter = Segmenter.from_settings(settings)
    thresholds = QcThresholds.from_settings(settings)
    started = time.perf_counter()
    validation, given_v = evaluate_cohort("acdc-validation", [settings.acdc_training_dir / p
                                                              for p in VALIDATION_PATIENTS],
                                          segmenter.segment_frames, thresholds)
    phantom_dir = args.work / "phantoms"
    if not phantom_dir.exists():
        write_cohort(phantom_dir, args.phantoms, seed=PHANTOM_SEED)
    phantoms, given_p = evaluate_cohort("phantom", sorted(phantom_dir.iterdir())[: args.phantoms],
                                        segmenter.segment_frames, thresholds)
    elapsed = time.perf_counter() - started
    with_uncertainty = given_v and given_p
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_csv([*validation, *phantoms], args.out.with_name("qc-frames.csv"))
    lines = [
        *static_page(thresholds),
        "## How well they find bad segmentations (measured)", "",
        f"Computed {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m workers.qc_report` in {elapsed:.0f} s: the "
        f"ED and ES frames of the 20 validation patients of the shipped model (never trained on) and of "
        f"{args.phantoms} phantom patients (`heartseg.phantom.write_cohort`, seed {PHANTOM_SEED}), segmented with "
        f"the shipped model (fingerprint `{segmenter.fingerprint[:16]}`, nnU-Net postprocessing "
        f"{'on: the folder has postprocessing.pkl' if getattr(segmenter, 'postprocessing', False) else 'off'}) on the "
        f"CPU with mirroring off to save time; default thresholds. A frame is bad when the Dice of any structure "
        f"against its reference is below {BAD_DICE:g}. A frame counts as flagged when a flag names it or its study "
        "(a flag of the cardiac indices names both frames). Per frame, with the reasons: `docs/qc-frames.csv`.", "",
        "Reading the tables: `edge_slice` says the stack may not cover the whole heart, not that the masks are "
        "wrong (the last column of the per-flag table runs it on the references), so the second row leaves it "
        "out. A good frame flagged by `far_piece` holds a stray label far from the heart: a real defect of the "
        "mask that moves its Dice little.", "",
    ]
    if with_uncertainty:
        lines += ["The segmenter gave each frame's uncertainty, so the `uncertain` flag is included; the tables "
                  "also give the figures without it. The default threshold "
                  f"(`HEARTSEG_QC_MAX_UNCERTAINTY`, {thresholds.max_uncertainty:g}) was chosen from the sweep below "
                  "on these same validation frames, so its figures are in-sample; the worker segments with "
                  "mirroring on by default, where the entropy of the averaged logits may differ: calibrate it on "
                  "your own cohort.", ""]
    else:
        lines += ["The figures exclude the `uncertain` flag: the segmenter's `segment_frames` did not hand an "
                  "uncertainty to its callback in this run (that change belongs to the segmenter), so no frame "
                  "had one.", ""]
    lines += cohort_section("ACDC validation patients", validation, with_uncertainty)
    lines += cohort_section(f"Phantom cohort ({args.phantoms} patients)", phantoms, with_uncertainty)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
