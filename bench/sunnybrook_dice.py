"""The shipped model on a real series from another scanner: LV cavity and myocardium Dice against the
Sunnybrook expert contours (SCD0000101). Writes ``docs/sunnybrook.md`` with this run's numbers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from heartseg.settings import get_settings
from heartseg.studies.dicom import load_dicom_cine
from heartseg.studies.sunnybrook import contour_references


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (NaN when both are empty)."""
    total = int(a.sum() + b.sum())
    return float("nan") if total == 0 else 2 * int((a & b).sum()) / total


def main() -> None:
    """Segment the contoured phases, compare slice by slice, pool over images."""
    settings = get_settings().model_copy(update={"device": "cpu", "use_mirroring": False})
    root = settings.shared_data / "sunnybrook"
    study = load_dicom_cine(root / "SCD0000101")
    references = contour_references(root / "SCD0000101", root / "SCD0000101_contours")
    from workers.inference.predictor import Segmenter

    segmenter = Segmenter.from_settings(settings)
    phases = sorted({r.phase for r in references})
    predicted = {p: segmenter.segment(study.frame(p).image, study.spacing) for p in phases}
    lv_pred, lv_ref, myo_pred, myo_ref, per_image = [], [], [], [], []
    for ref in references:
        labels = predicted[ref.phase][:, :, ref.slice_index]
        lv_pred.append(labels == 3)
        lv_ref.append(ref.labels == 3)
        per_image.append(dice(labels == 3, ref.labels == 3))
        if ref.has_myocardium:
            myo_pred.append(labels == 2)
            myo_ref.append(ref.labels == 2)
    lv = dice(np.stack(lv_pred), np.stack(lv_ref))
    myo = dice(np.stack(myo_pred), np.stack(myo_ref))
    report = "\n".join([
        "# Sunnybrook check (another scanner, never seen in training)", "",
        f"Computed {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m bench.sunnybrook_dice`: series SCD0000101 "
        f"(GE 1.5 T, {study.shape[2]} slices x {len(study.frames)} phases) read by HeartSeg's DICOM reader, "
        f"segmented by the shipped model (fingerprint `{segmenter.fingerprint[:16]}`, no mirroring), compared "
        "with the expert contours on the contoured images only.", "",
        "| structure | images | Dice (pooled over images) |", "|---|---|---|",
        f"| LV cavity (i-contour) | {len(lv_ref)} | {lv:.4f} |",
        f"| LV myocardium (o- minus i-contour) | {len(myo_ref)} | {myo:.4f} |", "",
        f"Per-image LV Dice: median {np.nanmedian(per_image):.4f}, min {np.nanmin(per_image):.4f}.",
    ]) + "\n"
    print(report)
    Path("docs").mkdir(exist_ok=True)
    (Path("docs") / "sunnybrook.md").write_text(report)


if __name__ == "__main__":
    main()
