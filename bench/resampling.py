"""Benchmark: the model's own resampling against nnU-Net's torch resampling (``HEARTSEG_RESAMPLING``).

``python -m bench.resampling [--patients N] [--mirroring] [--json FILE]`` segments the ED and ES frames of ACDC
validation patients twice with the shipped model: with the plans' resampling and with
``resample_torch_fornnunet`` (:mod:`workers.inference.resampling`). For each it reports the CPU seconds
(``time.process_time``, every thread of this process) and the wall seconds per frame of the work outside the
forward passes (preprocessing, export; and of the export, the quality signals alone), how many voxels of the
masks differ between the two, and the Dice of each against the reference labels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from heartseg.labels import STRUCTURES
from heartseg.settings import Settings
from heartseg.studies.acdc import load_acdc_patient

MODES = ("plans", "torch")


def measure(settings: Settings, n_patients: int) -> dict[str, Any]:
    """Per-frame seconds of each resampling, the voxels that differ, and the Dice of each."""
    import torch

    from workers.inference.predictor import Segmenter
    from workers.inference.quality_signals import frame_quality
    from workers.metrics import compare_label_maps
    from workers.training.split import VALIDATION_PATIENTS

    segmenters = {mode: Segmenter.from_settings(settings.model_copy(update={"resampling": mode}))
                  for mode in MODES}
    cpu: dict[str, list[float]] = {f"{m}_{s}": [] for m in MODES for s in ("preprocess", "export")}
    wall: dict[str, list[float]] = {key: [] for key in cpu}
    cpu["quality_signals"] = []
    dice: dict[str, list[float]] = {m: [] for m in MODES}
    differing = voxels = 0
    for patient in VALIDATION_PATIENTS[:n_patients]:
        study = load_acdc_patient(settings.acdc_training_dir / patient, cine=False)
        zyx = [float(s) for s in reversed(study.spacing)]
        for frame in study.frames:
            labels = {}
            for mode, segmenter in segmenters.items():
                started, clock = time.process_time(), time.perf_counter()
                item = segmenter._preprocess(frame.image, zyx)
                cpu[f"{mode}_preprocess"].append(time.process_time() - started)
                wall[f"{mode}_preprocess"].append(time.perf_counter() - clock)
                logits = segmenter._logits([item["data"]])[0]
                started, clock = time.process_time(), time.perf_counter()
                labels[mode], _ = segmenter._export(logits, item["data_properties"], 0, None)
                cpu[f"{mode}_export"].append(time.process_time() - started)
                wall[f"{mode}_export"].append(time.perf_counter() - clock)
                if mode == "plans":  # of the export: the quality signals alone (the same for both resamplings)
                    started = time.process_time()
                    frame_quality(logits[1], logits[0], labels[mode], study.spacing)
                    cpu["quality_signals"].append(time.process_time() - started)
                assert frame.reference is not None
                dice[mode] += [m.dice for m in compare_label_maps(labels[mode], frame.reference,
                                                                  study.spacing, STRUCTURES).values()]
            differing += int((labels["plans"] != labels["torch"]).sum())
            voxels += int(labels["plans"].size)
    frames = len(cpu["plans_preprocess"])
    result: dict[str, Any] = {"frames": frames, "threads": torch.get_num_threads(),
                              "mirroring": settings.use_mirroring, "voxels_differing": differing, "voxels": voxels,
                              "voxel_fraction_differing": round(differing / voxels, 6) if voxels else None}
    for key in cpu:
        result[f"{key}_cpu_s_per_frame"] = round(statistics.fmean(cpu[key]), 4)
        if key in wall:
            result[f"{key}_wall_s_per_frame"] = round(statistics.fmean(wall[key]), 4)
    for mode in MODES:
        result[f"{mode}_cpu_s_per_frame_outside_forward"] = round(
            result[f"{mode}_preprocess_cpu_s_per_frame"] + result[f"{mode}_export_cpu_s_per_frame"], 4)
        result[f"{mode}_mean_dice"] = round(float(np.mean(dice[mode])), 4)
    return result


def main() -> None:
    """Print (and with ``--json`` write) the measurements."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=20, help="the first N of the 20 validation patients")
    parser.add_argument("--mirroring", action="store_true", help="test-time mirroring (the forward passes only)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    settings = Settings(device="cpu", use_mirroring=args.mirroring)
    result = measure(settings, args.patients)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
