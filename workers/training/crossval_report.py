"""``docs/model-validation.md`` from the out-of-fold CSVs of :mod:`workers.training.crossval`.

``python -m workers.training.crossval_report [--work DIR] [--out FILE]``: Dice and HD95 per structure and
phase (and per pathology group), and the agreement of the cardiac indices (Pearson r, bias, 95 % limits of
agreement) between predicted and reference masks, with only numbers computed from those CSVs.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from heartseg.labels import STRUCTURES
from heartseg.settings import PROJECT_ROOT
from workers.training.crossval import DEFAULT_WORK
from workers.training.split import GROUPS

#: The indices compared, with their names in the table.
AGREEMENT = (("lv_ef_pct", "LVEF (%)"), ("rv_ef_pct", "RVEF (%)"), ("lv_edv_ml", "LVEDV (ml)"),
             ("rv_edv_ml", "RVEDV (ml)"), ("myo_mass_g", "LV mass (g)"))


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _values(rows: Sequence[dict[str, str]], column: str) -> list[float]:
    return [float(r[column]) for r in rows if r[column] not in ("", None) and math.isfinite(float(r[column]))]


def _mean_sd(values: Sequence[float], digits: int) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}"


def metric_rows(frames: Sequence[dict[str, str]]) -> list[str]:
    """Markdown rows: n, Dice and HD95 per structure and phase, then over both phases."""
    lines = ["| structure | phase | frames | Dice (mean ± SD) | Dice median | HD95 mm (mean ± SD) "
             "| frames Dice < 0.8 |", "|---|---|---|---|---|---|---|"]
    for structure in STRUCTURES:
        for phase in ("ED", "ES", "both"):
            rows = [r for r in frames if r["structure"] == structure.value and phase in (r["phase"], "both")]
            dice = _values(rows, "dice")
            if not dice:
                lines.append(f"| {structure.value} | {phase} | 0 | - | - | - | - |")
                continue
            lines.append(f"| {structure.value} | {phase} | {len(dice)} | {_mean_sd(dice, 4)} | "
                         f"{statistics.median(dice):.4f} | {_mean_sd(_values(rows, 'hd95_mm'), 2)} | "
                         f"{sum(d < 0.8 for d in dice)} |")
    return lines


def group_rows(frames: Sequence[dict[str, str]]) -> list[str]:
    """Markdown rows: mean Dice per pathology group and structure (ED and ES together)."""
    lines = ["| group | " + " | ".join(f"{s.value} Dice" for s in STRUCTURES) + " |",
             "|---|" + "---|" * len(STRUCTURES)]
    for group in GROUPS:
        cells = []
        for structure in STRUCTURES:
            dice = _values([r for r in frames if r["group"] == group and r["structure"] == structure.value], "dice")
            cells.append(f"{statistics.fmean(dice):.4f}" if dice else "-")
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return lines


def agreement_rows(indices: Sequence[dict[str, str]]) -> list[str]:
    """Markdown rows: per index, n, reference and predicted means, Pearson r, bias and 95 % limits."""
    lines = ["| index | patients | mean reference | mean predicted | r | bias (pred - ref) "
             "| 95 % limits of agreement |", "|---|---|---|---|---|---|---|"]
    for column, title in AGREEMENT:
        pairs = [(float(r[f"{column}_pred"]), float(r[f"{column}_ref"])) for r in indices
                 if r[f"{column}_pred"] not in ("", None) and r[f"{column}_ref"] not in ("", None)]
        if len(pairs) < 3:
            lines.append(f"| {title} | {len(pairs)} | - | - | - | - | - |")
            continue
        pred, ref = np.array(pairs).T
        diff = pred - ref
        bias, sd = float(diff.mean()), float(diff.std(ddof=1))
        r = float(np.corrcoef(pred, ref)[0, 1])
        lines.append(f"| {title} | {len(pairs)} | {ref.mean():.1f} | {pred.mean():.1f} | {r:.3f} | {bias:+.2f} | "
                     f"{bias - 1.96 * sd:+.2f} to {bias + 1.96 * sd:+.2f} |")
    return lines


def report(work: Path, model_dir: Path | None = None) -> str:
    """The page's Markdown."""
    frames = _read(work / "oof_frames.csv")
    indices = _read(work / "oof_indices.csv")
    folds = sorted({int(r["fold"]) for r in frames})
    n_frames = len({r["case"] for r in frames})
    patients = len({r["patient"] for r in frames})
    return "\n".join([
        "# The shipped model's cross-validation",
        "",
        f"Written by `python -m workers.training.crossval_report` on {datetime.now(UTC):%Y-%m-%d} from the "
        f"out-of-fold predictions of `python -m workers.training.crossval all` "
        f"({'model folder ' + str(model_dir) if model_dir else 'the shipped model folder'}).",
        "",
        f"**What each row measures.** Every row is out-of-fold: the {n_frames} frames (ED and ES of {patients} ACDC "
        "patients) were each segmented by the one fold that never saw that patient "
        f"(folds {', '.join(map(str, folds))}; the split is `workers/training/split.py`), with mirroring and the "
        "postprocessing decided on these same "
        "frames (`nnUNetv2_determine_postprocessing` on a cross-validation does the same; its choice is mildly "
        "optimistic here). A single fold is measured, not the five-fold ensemble: no ACDC training patient is "
        "unseen by the ensemble. The ensemble is measured only on data no fold saw (`docs/sunnybrook.md`).",
        "",
        "## Dice and HD95 per structure and phase", "", *metric_rows(frames), "",
        "## Dice per pathology group", "", *group_rows(frames), "",
        "## Cardiac indices: predicted against reference masks", "",
        "Pearson r, the bias and the 95 % limits of agreement (Bland-Altman) over the patients, from the ED and ES "
        "frames as `Info.cfg` states them.", "", *agreement_rows(indices), "",
        "Per-frame rows: `docs/model-validation-frames.csv` (case, fold, structure, Dice, HD95, volumes, signals).",
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    """Write the page and copy the per-frame CSV beside it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "model-validation.md")
    args = parser.parse_args(argv)
    args.out.write_text(report(args.work))
    (args.out.parent / "model-validation-frames.csv").write_text((args.work / "oof_frames.csv").read_text())
    print(args.out)


if __name__ == "__main__":
    main()
