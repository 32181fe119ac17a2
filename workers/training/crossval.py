"""Cross-validation of the five-fold model as nnU-Net reports it: out-of-fold predictions of the 100 ACDC patients.

Every ACDC training patient is in the validation set of exactly one fold (:mod:`workers.training.split`), so
segmenting each fold's 20 validation patients with that fold alone gives one prediction of every patient by a
network that never saw it: 200 out-of-fold frames (ED and ES).

Steps (``python -m workers.training.crossval STEP [--work DIR] [--model DIR] [--fold F]``), each resumable:

``segment``
    Each fold segments its validation patients' ED and ES frames with the model folder's ``fold_F`` alone,
    mirroring on (``HEARTSEG_USE_MIRRORING``), without postprocessing (the Segmenter's own code path). The
    raw masks, the references and each frame's quality signals (:mod:`workers.quality`, one network's) are
    kept in ``WORK``; a frame already segmented by the same checkpoint and mirroring is kept.
``postprocess``
    nnunetv2's ``determine_postprocessing`` on all out-of-fold frames (as on a cross-validation); its
    ``postprocessing.pkl`` and ``.json`` go into the model folder.
``segment --degrade NAME``
    The same with the images degraded on purpose (:mod:`workers.training.degrade`), in ``WORK/degraded-NAME``;
    ``evaluate --degrade NAME`` measures them (with the postprocessing decided on the clean frames).
``evaluate``
    The model folder's postprocessing applied to the raw masks; per frame and structure the Dice, HD95, the
    final volume and the signals (``WORK/oof_frames.csv``); per patient the cardiac indices from the predicted
    and the reference masks (``WORK/oof_indices.csv``).

The report (``docs/model-validation.md``) is written from those CSVs by :mod:`workers.training.crossval_report`,
and the quality calibration fitted on them by :mod:`workers.training.calibrate`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from heartseg.labels import STRUCTURES
from heartseg.models import POSTPROCESSING_FILE, available_folds
from heartseg.settings import PROJECT_ROOT, Settings, get_settings
from heartseg.studies.acdc import load_acdc_patient, read_info_cfg
from heartseg.studies.nifti import write_label_map
from workers.indices import cardiac_indices
from workers.metrics import structure_metrics
from workers.quality import FrameQuality
from workers.training.degrade import DEGRADATIONS
from workers.training.split import FOLD_VALIDATION, GROUPS, PATIENTS_PER_GROUP

DEFAULT_WORK = PROJECT_ROOT / "work" / "crossval"
FRAME_COLUMNS = ("case", "patient", "group", "frame", "phase", "fold", "structure", "dice", "hd95_mm",
                 "vol_pred_ml", "vol_ref_ml", "self_dice", "entropy", "uncertainty")
INDEX_NAMES = ("lv_edv_ml", "lv_esv_ml", "lv_ef_pct", "rv_edv_ml", "rv_esv_ml", "rv_ef_pct", "myo_mass_g")


def group_of(patient: str) -> str:
    """The ACDC pathology group of a training patient (``patientNNN``)."""
    return GROUPS[(int(patient[-3:]) - 1) // PATIENTS_PER_GROUP]


def segment(model_dir: Path, work: Path, folds: list[int], degradation: str | None = None, *,
            patients: Sequence[str] | None = None, settings: Settings | None = None) -> None:
    """Segment each fold's validation frames with that fold alone (raw labels, references, signals); with
    ``degradation`` (a name of :data:`workers.training.degrade.DEGRADATIONS`), the images degraded first.
    ``patients`` keeps only those of each fold's validation patients."""
    from workers.training.postprocess import raw_segmenter

    settings = settings or get_settings()
    acdc = settings.acdc_training_dir
    degrade = DEGRADATIONS[degradation] if degradation else None
    for name in ("pred", "ref", "signals"):
        (work / name).mkdir(parents=True, exist_ok=True)
    for fold in folds:
        segmenter = raw_segmenter(model_dir, settings.model_copy(update={"folds": [str(fold)]}),
                                  use_mirroring=settings.use_mirroring)
        made_by = f"{segmenter.fingerprint} mirroring={segmenter.use_mirroring}"
        for patient in FOLD_VALIDATION[fold]:
            if patients is not None and patient not in patients:
                continue
            study = load_acdc_patient(acdc / patient, cine=False)
            cases = [f"{patient}_frame{f.number:02d}" for f in study.frames]
            if all(_signals_of(work, case).get("made_by") == made_by for case in cases):
                continue
            qualities: dict[int, FrameQuality | None] = {}
            def keep(index: int, _labels: np.ndarray, quality: FrameQuality | None,
                     seen: dict[int, FrameQuality | None] = qualities) -> None:
                seen[index] = quality

            images = [f.image if degrade is None else degrade(f.image, f.number) for f in study.frames]
            masks = segmenter.segment_frames(images, study.spacing, keep)
            for index, (frame, case, labels) in enumerate(zip(study.frames, cases, masks, strict=True)):
                quality = qualities.get(index)
                write_label_map(work / "pred" / f"{case}.nii.gz", labels, study.affine, study.header)
                shutil.copyfile(acdc / patient / f"{case}_gt.nii.gz", work / "ref" / f"{case}.nii.gz")
                record = {"case": case, "patient": patient, "frame": frame.number,
                          "phase": study.phase_of(frame.number).value, "fold": fold, "degradation": degradation,
                          "made_by": made_by, "quality": _quality_json(quality)}
                (work / "signals" / f"{case}.json").write_text(json.dumps(record, indent=1))
            print(f"fold {fold}: segmented {patient}", flush=True)


def _signals_of(work: Path, case: str) -> dict[str, Any]:
    path = work / "signals" / f"{case}.json"
    if not (path.is_file() and (work / "pred" / f"{case}.nii.gz").is_file()):
        return {}
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def _quality_json(quality: FrameQuality | None) -> dict[str, Any] | None:
    if quality is None:
        return None
    return {"uncertainty": quality.uncertainty, "n_folds": quality.n_folds,
            "structures": {s.structure.value: {"self_dice": list(s.self_dice), "entropy": list(s.entropy)}
                           for s in quality.structures}}


def postprocess(model_dir: Path, work: Path) -> dict[str, object]:
    """nnunetv2's ``determine_postprocessing`` on every out-of-fold frame; the rules go into ``model_dir``."""
    from workers.training.postprocess import determine

    pred, ref = work / "pred", work / "ref"
    decided = work / "pp"  # determine_postprocessing writes beside the predictions: a copy keeps WORK/pred clean
    shutil.rmtree(decided, ignore_errors=True)
    shutil.copytree(pred, decided)
    return determine(model_dir, decided, ref)


def evaluate(model_dir: Path, work: Path, settings: Settings | None = None) -> tuple[Path, Path]:
    """Postprocess the raw out-of-fold masks as the model folder says, measure them; write the two CSVs."""
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing

    acdc = (settings or get_settings()).acdc_training_dir
    pp = model_dir / POSTPROCESSING_FILE
    fns, kwargs = load_pickle(str(pp)) if pp.is_file() else ([], [])
    frame_rows: list[dict[str, Any]] = []
    index_rows: list[dict[str, Any]] = []
    patients = sorted({json.loads(p.read_text())["patient"] for p in (work / "signals").glob("*.json")})
    for patient in patients:
        study = load_acdc_patient(acdc / patient, cine=False)
        predicted: dict[int, np.ndarray] = {}
        for frame in study.frames:
            case = f"{patient}_frame{frame.number:02d}"
            record = _signals_of(work, case)
            raw = np.asarray(nib_load(work / "pred" / f"{case}.nii.gz"), dtype=np.uint8)
            labels = np.asarray(apply_postprocessing(raw, fns, kwargs), dtype=np.uint8) if fns else raw
            predicted[frame.number] = labels
            assert frame.reference is not None
            quality = record.get("quality") or {}
            for structure in STRUCTURES:
                m = structure_metrics(labels, frame.reference, study.spacing, structure)
                signals = quality.get("structures", {}).get(structure.value, {})
                entropy = (signals.get("entropy") or [None])[0]
                frame_rows.append({
                    "case": case, "patient": patient, "group": group_of(patient), "frame": frame.number,
                    "phase": record["phase"], "fold": record["fold"], "structure": structure.value,
                    "dice": m.dice, "hd95_mm": m.hd95_mm, "vol_pred_ml": m.vol_pred_ml, "vol_ref_ml": m.vol_ref_ml,
                    "self_dice": (signals.get("self_dice") or [math.nan])[0],
                    "entropy": math.nan if entropy is None else entropy,
                    "uncertainty": quality.get("uncertainty") if quality.get("uncertainty") is not None else math.nan,
                })
        info = read_info_cfg(acdc / patient / "Info.cfg")
        references = {f.number: f.reference for f in study.frames if f.reference is not None}
        pred_idx = cardiac_indices(predicted, study.spacing, ed_frame=info.ed, es_frame=info.es)
        ref_idx = cardiac_indices(references, study.spacing, ed_frame=info.ed, es_frame=info.es)
        row: dict[str, Any] = {"patient": patient, "group": group_of(patient),
                               "fold": _signals_of(work, f"{patient}_frame{info.ed:02d}")["fold"]}
        for name in INDEX_NAMES:
            row[f"{name}_pred"] = getattr(pred_idx, name)
            row[f"{name}_ref"] = getattr(ref_idx, name)
        index_rows.append(row)
    frames_csv, indices_csv = work / "oof_frames.csv", work / "oof_indices.csv"
    _write_csv(frames_csv, list(FRAME_COLUMNS), frame_rows)
    _write_csv(indices_csv, ["patient", "group", "fold", *(f"{n}_{s}" for n in INDEX_NAMES for s in ("pred", "ref"))],
               index_rows)
    return frames_csv, indices_csv


def nib_load(path: Path) -> np.ndarray:
    """A label map's voxels as stored (HeartSeg's (x, y, z) order)."""
    import nibabel as nib

    image = nib.load(str(path))
    assert isinstance(image, nib.Nifti1Image)
    return np.asanyarray(image.dataobj)


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(v) for k, v in row.items()})


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return value


def main(argv: list[str] | None = None) -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("segment", "postprocess", "evaluate", "all"))
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped one)")
    parser.add_argument("--fold", type=int, action="append", default=None,
                        help="fold(s) to segment (default: every fold the model folder has)")
    parser.add_argument("--degrade", choices=sorted(DEGRADATIONS), default=None,
                        help="segment degraded images, in WORK/degraded-NAME (evaluate reads them there too)")
    args = parser.parse_args(argv)
    model_dir = (args.model or get_settings().model_dir).resolve()
    work = args.work.resolve() / (f"degraded-{args.degrade}" if args.degrade else "")
    folds = args.fold if args.fold is not None else [int(f) for f in available_folds(model_dir) if f != "all"]
    if args.step in ("segment", "all"):
        segment(model_dir, work, folds, args.degrade)
    if args.step in ("postprocess", "all") and not args.degrade:  # decided on the ACDC frames as they are
        decision = postprocess(model_dir, work)
        print(f"postprocessing: {decision['postprocessing_fns']} {decision['postprocessing_kwargs']}")
    if args.step in ("evaluate", "all"):
        for path in evaluate(model_dir, work):
            print(path)


if __name__ == "__main__":
    main()
