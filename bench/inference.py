"""Benchmark: seconds per frame of the in-process predictor, with and without mirroring, and peak memory.

Run with ``make bench``; writes ``docs/bench-inference.md`` with the numbers this run measured.
Frames: the ED and ES frames of ACDC validation patients when the shared data is present,
else phantom frames.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from heartseg.settings import Settings
from heartseg.studies.acdc import load_acdc_patient


def frames(settings: Settings, n_patients: int) -> list[tuple[str, np.ndarray, tuple[float, float, float]]]:
    """(name, image, spacing) of the ED and ES frames of a few patients."""
    from workers.training.split import VALIDATION_PATIENTS

    root = settings.acdc_training_dir
    if root.is_dir():
        folders = [root / p for p in VALIDATION_PATIENTS[:: max(1, len(VALIDATION_PATIENTS) // n_patients)]]
    else:
        from heartseg.phantom import write_cohort

        out = Path(tempfile.mkdtemp())
        write_cohort(out, n_patients, seed=1)
        folders = sorted(out.iterdir())
    result = []
    for folder in folders[:n_patients]:
        study = load_acdc_patient(folder, cine=False)
        result += [(f"{study.study_id}/{f.number}", f.image, study.spacing) for f in study.frames]
    return result


FRAME_STAGES = ("preprocess", "forward", "export")


def stage_sums() -> dict[str, float]:
    """Seconds recorded so far in this process by the predictor, per nnU-Net step."""
    from prometheus_client import REGISTRY

    return {stage: REGISTRY.get_sample_value("heartseg_stage_seconds_sum", {"stage": stage}) or 0.0
            for stage in FRAME_STAGES}


def main() -> None:
    """Time model loading and segmentation; print and write a Markdown report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/bench-inference.md"))
    args = parser.parse_args()
    settings = Settings(device="cpu")
    data = frames(settings, args.patients)

    import torch

    from workers.inference.predictor import Segmenter

    rows, stages = [], []
    for mirroring in (False, True):
        started = time.perf_counter()
        segmenter = Segmenter.from_settings(settings, use_mirroring=mirroring)
        load_s = time.perf_counter() - started
        segmenter.segment(data[0][1], data[0][2])  # warm-up
        before = stage_sums()
        times = []
        for _, image, spacing in data:
            t0 = time.perf_counter()
            segmenter.segment(image, spacing)
            times.append(time.perf_counter() - t0)
        rows.append((mirroring, load_s, statistics.fmean(times), min(times), max(times)))
        after = stage_sums()
        stages.append((mirroring, {k: (after[k] - before[k]) / len(data) for k in FRAME_STAGES}))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shapes = sorted({tuple(i.shape) for _, i, _ in data})
    lines = [
        "# Inference benchmark",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make bench` (`bench/inference.py`) on "
        f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; device cpu.",
        f"{len(data)} frames (ED and ES of {len(data) // 2} patients), shapes {shapes[0]} to {shapes[-1]}; "
        f"model `{settings.model_dir.name}`.",
        "",
        "| mirroring (TTA) | model load s | mean s/frame | min | max |",
        "|---|---|---|---|---|",
    ]
    for mirroring, load_s, mean, low, high in rows:
        lines.append(f"| {'on' if mirroring else 'off'} | {load_s:.2f} | {mean:.2f} | {low:.2f} | {high:.2f} |")
    lines += ["", "Mean seconds per frame in each of nnU-Net's steps (the workers' `heartseg_stage_seconds`):", "",
              "| mirroring (TTA) | " + " | ".join(FRAME_STAGES) + " |", "|---|" + "---|" * len(FRAME_STAGES)]
    for mirroring, per_stage in stages:
        lines.append(f"| {'on' if mirroring else 'off'} | " + " | ".join(f"{per_stage[k]:.3f}" for k in FRAME_STAGES)
                     + " |")
    lines += ["", f"Peak resident memory of the process: {peak_mib:.0f} MiB."]
    report = "\n".join(lines) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


if __name__ == "__main__":
    main()
