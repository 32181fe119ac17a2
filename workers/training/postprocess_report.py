"""Before and after nnU-Net's postprocessing: ``python -m workers.training.postprocess_report`` writes
``docs/postprocessing.md`` with only numbers this run computed.

- The 20 validation patients' ED and ES frames, segmented by the shipped model with mirroring (as the model
  card validates it) without postprocessing (the predictions of ``recipe postprocess`` when they are there
  and made by the same model, else segmented now), then postprocessed by the Segmenter's own
  :meth:`~workers.inference.predictor.Segmenter.postprocess` (the model folder's ``postprocessing.pkl``);
  both evaluated against the references by ``heartseg evaluate``'s code (:mod:`workers.evaluation`).
- Sunnybrook SCD0000101 (another scanner): the contoured phases segmented the same way, compared with the
  expert contours image by image with the same metrics (:func:`workers.metrics.structure_metrics`, in-plane
  spacing); Dice pooled over the images as ``bench/sunnybrook_dice.py`` does, and per-image means.
- The decision nnU-Net made (``postprocessing.json`` in the model folder).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from heartseg.labels import STRUCTURES, Structure
from heartseg.models import POSTPROCESSING_FILE
from heartseg.settings import PROJECT_ROOT, get_settings
from heartseg.studies.acdc import read_info_cfg
from heartseg.studies.dicom import load_dicom_cine
from heartseg.studies.nifti import as_labels, read_volume, write_label_map
from heartseg.studies.sunnybrook import contour_references
from workers.evaluation import CaseResult, evaluate_case, summarize
from workers.metrics import StructureMetrics, structure_metrics
from workers.training.postprocess import POSTPROCESSING_JSON, raw_segmenter, segment_validation
from workers.training.split import VALIDATION_PATIENTS

#: Where ``recipe postprocess`` leaves its predictions (``--work`` of the recipe + ``postprocessing``).
DEFAULT_WORK = PROJECT_ROOT / "work" / "nnunet" / "postprocessing"


def _fmt(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def describe_rules(model_dir: Path) -> tuple[list[str], dict[str, object]]:
    """The rules nnU-Net chose, in words, and its ``postprocessing.json``."""
    decision = json.loads((model_dir / POSTPROCESSING_JSON).read_text())
    names = {s.label: s.value for s in STRUCTURES}
    rules = []
    for fn, kwargs in zip(decision["postprocessing_fns"], decision["postprocessing_kwargs"], strict=True):
        target = kwargs["labels_or_regions"]
        labels = target if isinstance(target, list) else [target]
        what = ("the whole foreground (" + ", ".join(names.get(int(x), str(x)) for x in labels) + ") together"
                if len(labels) > 1 else f"label {labels[0]} ({names.get(int(labels[0]), '?')})")
        rules.append(f"`{fn}`: keep only the largest connected component of {what}")
    return rules, decision


def validation_rows(pred: Path, post: Path, ref: Path, acdc: Path) -> tuple[list[str], dict[str, int]]:
    """Markdown rows (phase, structure, Dice and HD95 without and with) and the frames changed per structure."""
    phases: dict[str, str] = {}
    for patient in VALIDATION_PATIENTS:
        info = read_info_cfg(acdc / patient / "Info.cfg")
        phases[f"{patient}_frame{info.ed:02d}"] = "ED"
        phases[f"{patient}_frame{info.es:02d}"] = "ES"
    results: dict[tuple[str, str], list[CaseResult]] = {}
    changed = {s.value: 0 for s in STRUCTURES}
    for case, phase in sorted(phases.items()):
        name = f"{case}.nii.gz"
        for kind, folder in (("without", pred), ("with", post)):
            result = evaluate_case(case, folder / name, ref / name)
            if result.error:
                raise SystemExit(result.error)
            results.setdefault((phase, kind), []).append(result)
        before = as_labels(read_volume(pred / name))
        after = as_labels(read_volume(post / name))
        for s in STRUCTURES:
            changed[s.value] += int(np.any((before == s.label) != (after == s.label)))
    rows = []
    for phase in ("ED", "ES"):
        without = {s.structure: s for s in summarize(results[(phase, "without")])}
        with_pp = {s.structure: s for s in summarize(results[(phase, "with")])}
        for st in STRUCTURES:
            a, b = without[st], with_pp[st]
            infinite = (f" ({a.n_inf_distance} / {b.n_inf_distance} empty)"
                        if a.n_inf_distance or b.n_inf_distance else "")
            rows.append(f"| {phase} | {st.value} | {a.n} | {_fmt(a.dice_mean, 4)} | {_fmt(b.dice_mean, 4)} | "
                        f"{_fmt(a.hd95_mean_mm, 2)} | {_fmt(b.hd95_mean_mm, 2)}{infinite} |")
    return rows, changed


def _pooled_dice(rows: list[StructureMetrics]) -> float:
    tp, fp, fn = (sum(getattr(m, k) for m in rows) for k in ("tp", "fp", "fn"))
    return math.nan if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def _finite_mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def sunnybrook_rows(raw_labels: dict[int, np.ndarray], post_labels: dict[int, np.ndarray],
                    root: Path, spacing: tuple[float, ...]) -> list[str]:
    """Markdown rows per structure: images, pooled and mean Dice, mean HD95, without and with."""
    references = contour_references(root / "SCD0000101", root / "SCD0000101_contours")
    rows = []
    for structure, wanted in ((Structure.LV, lambda r: True), (Structure.MYO, lambda r: r.has_myocardium)):
        metrics: dict[str, list[StructureMetrics]] = {"without": [], "with": []}
        for ref in (r for r in references if wanted(r)):
            for kind, labels in (("without", raw_labels), ("with", post_labels)):
                predicted = labels[ref.phase][:, :, ref.slice_index]
                metrics[kind].append(structure_metrics(predicted, ref.labels, spacing[:2], structure))
        a, b = metrics["without"], metrics["with"]
        rows.append(f"| {structure.value} | {len(a)} | {_pooled_dice(a):.4f} | {_pooled_dice(b):.4f} | "
                    f"{statistics.fmean(m.dice for m in a):.4f} | {statistics.fmean(m.dice for m in b):.4f} | "
                    f"{_fmt(_finite_mean([m.hd95_mm for m in a]), 2)} | "
                    f"{_fmt(_finite_mean([m.hd95_mm for m in b]), 2)} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    """Measure, print and write ``docs/postprocessing.md``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="predictions of `recipe postprocess`")
    parser.add_argument("--out", type=Path, default=Path("docs") / "postprocessing.md")
    args = parser.parse_args(argv)
    settings = get_settings()
    model_dir = settings.model_dir.resolve()
    if not (model_dir / POSTPROCESSING_FILE).is_file():
        raise SystemExit(f"{model_dir}: no {POSTPROCESSING_FILE}; run `python -m workers.training.recipe postprocess`")
    from workers.inference.predictor import Segmenter

    raw = raw_segmenter(model_dir, settings)
    postprocessed = Segmenter.from_settings(settings.model_copy(update={"use_mirroring": True, "postprocessing": True}),
                                            model_dir=model_dir)
    pred, ref = segment_validation(raw, settings.acdc_training_dir, args.work)
    post = args.work / "pred_postprocessed"
    for path in sorted(pred.glob("*.nii.gz")):
        volume = read_volume(path)
        write_label_map(post / path.name, postprocessed.postprocess(as_labels(volume)), volume.affine, volume.header)
    rows, changed = validation_rows(pred, post, ref, settings.acdc_training_dir)

    root = settings.shared_data / "sunnybrook"
    study = load_dicom_cine(root / "SCD0000101")
    phases = sorted({r.phase for r in contour_references(root / "SCD0000101", root / "SCD0000101_contours")})
    raw_labels = dict(zip(phases, raw.segment_frames([study.frame(p).image for p in phases], study.spacing),
                          strict=True))
    post_labels = {p: postprocessed.postprocess(labels) for p, labels in raw_labels.items()}
    changed_sunny = sum(int((raw_labels[p] != post_labels[p]).sum()) for p in phases)
    sunny = sunnybrook_rows(raw_labels, post_labels, root, tuple(study.spacing))

    rules, decision = describe_rules(model_dir)
    before = decision["input_folder"]["foreground_mean"]["Dice"]  # type: ignore[index]
    after = decision["postprocessed"]["foreground_mean"]["Dice"]  # type: ignore[index]
    lines = [
        "# Postprocessing (nnU-Net's connected-component rules)", "",
        f"Computed {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m workers.training.postprocess_report`. "
        f"The shipped model (fingerprint without postprocessing `{raw.fingerprint[:16]}`, with it "
        f"`{postprocessed.fingerprint[:16]}`), mirroring on, on the CPU. The rules were chosen by nnunetv2's "
        "`determine_postprocessing` on the same 20 validation patients' ED and ES frames "
        "(`python -m workers.training.recipe postprocess`); the Segmenter applies them by default "
        "(`HEARTSEG_POSTPROCESSING=false` turns them off). The rules were chosen on the patients they are "
        "measured on below, so the validation gain is an optimistic estimate; Sunnybrook is independent of the "
        "choice.", "",
        "## The decision", "",
        *([f"- {rule}" for rule in rules] or ["- none: no rule improved the Dice, the labels stay as predicted"]),
        "",
        f"nnU-Net's own evaluation (mean foreground Dice over the 40 frames): {before:.5f} before, {after:.5f} after.",
        "",
        "## Validation patients (20, ED and ES), `heartseg evaluate`'s metrics", "",
        "| phase | structure | n | Dice without | Dice with | HD95 mm without | HD95 mm with |",
        "|---|---|---|---|---|---|---|", *rows, "",
        "Frames whose label map changed, per structure (of 40): "
        + ", ".join(f"{k} {v}" for k, v in changed.items()) + ".", "",
        "## Sunnybrook SCD0000101 (another scanner), against the expert contours", "",
        f"{len(phases)} contoured phases segmented; the postprocessing changed {changed_sunny} of their "
        f"{sum(labels.size for labels in raw_labels.values()):,} voxels. Per contoured image, in-plane metrics "
        "(HD95 in 2D).", "",
        "| structure | images | Dice pooled without | Dice pooled with | mean Dice without | mean Dice with | "
        "HD95 mm without | HD95 mm with |",
        "|---|---|---|---|---|---|---|---|", *sunny, "",
    ]
    report = "\n".join(lines)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


if __name__ == "__main__":
    main()
