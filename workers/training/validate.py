"""The model card's validation numbers: segment the 20 validation patients' ED and ES frames with the
shipped model and evaluate them with HeartSeg's own evaluation (as ``heartseg evaluate`` does).

``python -m workers.training.validate [--no-tta] [--no-postprocessing]`` writes
``docs/model-validation[-no-tta].md`` and the per-case CSVs beside it, with only numbers this run computed.
The Segmenter applies the model folder's postprocessing unless ``--no-postprocessing`` (or
``HEARTSEG_POSTPROCESSING=false``); the report says which.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from heartseg.labels import STRUCTURES
from heartseg.settings import get_settings
from heartseg.studies.acdc import load_acdc_patient
from heartseg.studies.nifti import write_label_map
from workers.evaluation import evaluate_folders, summarize, write_csv
from workers.training.split import VALIDATION_PATIENTS


def main() -> None:
    """Predict, evaluate per phase, write the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-tta", action="store_true")
    parser.add_argument("--no-postprocessing", action="store_true", help="the network's labels as they are")
    parser.add_argument("--work", type=Path, default=Path("work/validation"))
    args = parser.parse_args()
    settings = get_settings().model_copy(update={"use_mirroring": not args.no_tta, "device": "cpu"})
    if args.no_postprocessing:
        settings = settings.model_copy(update={"postprocessing": False})
    from workers.inference.predictor import Segmenter

    segmenter = Segmenter.from_settings(settings)
    seconds = []
    for patient in VALIDATION_PATIENTS:
        folder = settings.acdc_training_dir / patient
        study = load_acdc_patient(folder, cine=False)
        for frame in study.frames:
            phase = study.phase_of(frame.number).value  # ED or ES: only those frames are loaded
            case = f"{patient}_frame{frame.number:02d}"
            started = time.perf_counter()
            labels = segmenter.segment(frame.image, study.spacing)
            seconds.append(time.perf_counter() - started)
            write_label_map(args.work / phase / "pred" / f"{case}.nii.gz", labels, study.affine, study.header)
            reference = args.work / phase / "ref" / f"{case}.nii.gz"
            reference.parent.mkdir(parents=True, exist_ok=True)
            reference.write_bytes((folder / f"{case}_gt.nii.gz").read_bytes())
    suffix = "-no-tta" if args.no_tta else ""
    lines = [f"# Validation of the shipped model{' (no mirroring)' if args.no_tta else ''}", "",
             f"Computed {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m workers.training.validate"
             f"{' --no-tta' if args.no_tta else ''}` on the 20 validation patients "
             f"({', '.join(VALIDATION_PATIENTS)}), none of them seen in training; model fingerprint "
             f"`{segmenter.fingerprint[:16]}`, mirroring {'off' if args.no_tta else 'on'}, postprocessing "
             f"{'on' if segmenter.postprocessing else 'off'}, "
             f"{statistics.fmean(seconds):.2f} s per frame on the CPU.", "",
             "| phase | structure | n | Dice | IoU | HD95 mm | ASSD mm |", "|---|---|---|---|---|---|---|"]
    means = {}
    for phase in ("ED", "ES"):
        results = list(evaluate_folders(args.work / phase / "pred", args.work / phase / "ref"))
        write_csv(results, Path("docs") / f"model-validation{suffix}-{phase.lower()}.csv")
        for s in summarize(results):
            lines.append(f"| {phase} | {s.structure.value} | {s.n} | {s.dice_mean:.4f} | {s.iou_mean:.4f} | "
                         f"{s.hd95_mean_mm:.2f} | {s.assd_mean_mm:.2f} |")
            means[(phase, s.structure.value)] = s.dice_mean
    overall = {st.value: statistics.fmean([means[("ED", st.value)], means[("ES", st.value)]]) for st in STRUCTURES}
    lines += ["", "Mean Dice over ED and ES: " + ", ".join(f"{k} {v:.4f}" for k, v in overall.items())
              + f"; mean over RV, MYO, LV: {statistics.fmean(overall.values()):.4f}."]
    report = "\n".join(lines) + "\n"
    print(report)
    (Path("docs") / f"model-validation{suffix}.md").write_text(report)


if __name__ == "__main__":
    main()
