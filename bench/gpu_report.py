"""Turn the GPU benchmark's JSON (``bench/gpu.sh`` runs, kept in ``docs/gpu-runs/``) into ``docs/bench-gpu.md``.

    python -m bench.gpu_report docs/gpu-runs/gpu-a.json docs/gpu-runs/gpu-b.json --out docs/bench-gpu.md

Every figure in the page is computed here from the JSON that the GPU run wrote; nothing is typed in.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from workers.training.split import VALIDATION_PATIENTS

RUNS = {"nnunet-c1": "(b) nnU-Net's predictor, one study at a time",
        "batched-c1": "(c) batched, one study at a time",
        "batched-c2": "(c) batched, 2 studies in flight (threads)",
        "batched-c4": "(c) batched, 4 studies in flight (threads)"}


def combined(parts: list[dict[str, Any]], run: str) -> dict[str, float]:
    """One run's figures over all parts (the parts ran one after the other on the same machine)."""
    frames = sum(p["runs"][run]["frames"] for p in parts)
    wall = sum(p["runs"][run]["wall_s"] for p in parts)
    forward = sum(p["runs"][run]["forward_s"] for p in parts)
    return {"frames": frames, "wall_s": wall, "frames_per_s": frames / wall, "held": forward / wall,
            "peak_gpu_mib": max(p["runs"][run]["peak_gpu_mib"] for p in parts)}


def validation_rate(parts: list[dict[str, Any]], run: str) -> tuple[int, float]:
    """(frames, frames/s) of the validation patients in a one-study-at-a-time run, from per-study seconds."""
    seconds = [s for p in parts for patient, s in p["runs"][run]["study_s"].items() if patient in VALIDATION_PATIENTS]
    return 2 * len(seconds), 2 * len(seconds) / sum(seconds)


def render(parts: list[dict[str, Any]]) -> str:
    """The Markdown page."""
    device = parts[0]["device"]
    frames = sum(p["frames"] for p in parts)
    base = combined(parts, "nnunet-c1")
    lines = [
        "# Inference on a GPU: nnU-Net's predictor and HeartSeg's batched predictor",
        "",
        f"Measured {device['date_utc']} UTC on a lent machine: **{device['gpu']}** ({device['nvidia_smi']}), "
        f"{device['cpu_cores']} CPU cores, torch {device['torch']} (CUDA {device['cuda']}), "
        f"Python {device['python']}; nnunetv2 2.8.1 from the carried wheels.",
        "Commands: `bench/gpu_carry.sh` here (wheels and packed frames), then on the GPU machine "
        "`bash bench/gpu.sh a` and `bash bench/gpu.sh b --sweep` (the frames travel in two halves: patients "
        "001-050, then 051-100); this page: `python -m bench.gpu_report`. Raw figures: `docs/gpu-runs/`.",
        "",
        f"Data: the ED and ES frames of all 100 ACDC training patients ({frames} frames, their stored voxels), "
        "shipped model, **mirroring (TTA) on**, `Segmenter.segment_frames` (the worker's own path: nnU-Net "
        "preprocessing, forward passes, nnU-Net export to the source geometry) per study. A warm-up on two studies "
        "precedes every timed run. SimpleITK, blosc2, imagecodecs and pyjpegls are not installed there; "
        "placeholders that raise when called stand in for them (`bench/absent_modules.py`): nnunetv2 imports them "
        "but never calls them when it predicts from arrays.",
        "",
        "| run | frames | wall s | frames/s | x (b) | forward stage held the device | peak GPU memory MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for run, label in RUNS.items():
        c = combined(parts, run)
        lines.append(f"| {label} | {c['frames']} | {c['wall_s']:.1f} | {c['frames_per_s']:.2f} | "
                     f"{c['frames_per_s'] / base['frames_per_s']:.1f} | {100 * c['held']:.0f} % | "
                     f"{c['peak_gpu_mib']:.0f} |")
    agreement = {k: sum(p["agreement"][k] for p in parts) for k in ("differing_voxels", "voxels")}
    share = 100 * (1 - agreement["differing_voxels"] / agreement["voxels"])
    lines += [
        "",
        "'Forward stage held the device' is the time inside the forward passes (the device lock held, results "
        "copied back) over the wall time: an upper bound of the GPU's busy time. The rest of each study is CPU "
        "work: nnU-Net's preprocessing (resampling) and export (resampling back), which the studies in flight "
        "overlap with the forward passes.",
        "",
        "The 40 frames of the 20 validation patients, from the same runs' per-study seconds (one study at a time):",
        "",
        "| run | frames | frames/s |",
        "|---|---|---|",
    ]
    for run in ("nnunet-c1", "batched-c1"):
        n, rate = validation_rate(parts, run)
        lines.append(f"| {RUNS[run]} | {n} | {rate:.2f} |")
    lines += [
        "",
        f"**Masks agreement**, (b) against (c), all {frames} frames: {agreement['differing_voxels']} of "
        f"{agreement['voxels']} voxels differ ({share:.4f} % identical). On a GPU both run under autocast "
        "(half precision), where a convolution over a batch of another size may round differently, so "
        "a voxel whose two best classes' logits lie within that rounding can change its argmax (the expected "
        "cause; this run counted the voxels, it did not inspect each one).",
        "",
        "Tiles per forward pass (a tile and each mirrored copy count one; the default on a GPU is 256), "
        "first 10 studies of the first half, one study at a time:",
        "",
        "| network inputs per pass | frames/s |",
        "|---|---|",
    ]
    first10 = [p for p in parts if "batched-c1-tiles64-first10" in p["runs"]]
    if first10:
        part = first10[0]
        ten = part["patients"][:10]
        default_s = sum(part["runs"]["batched-c1"]["study_s"][p] for p in ten)
        rows = [(256, 2 * len(ten) / default_s)]
        for name, figures in part["runs"].items():
            if name.startswith("batched-c1-tiles"):
                rows.append((int(name.split("tiles")[1].split("-")[0]), figures["frames"] / figures["wall_s"]))
        for budget, rate in sorted(rows):
            lines.append(f"| {budget} | {rate:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Read the JSON files, write the page."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=Path("docs/bench-gpu.md"))
    args = parser.parse_args()
    page = render([json.loads(p.read_text()) for p in args.parts])
    args.out.write_text(page)
    print(page)


if __name__ == "__main__":
    main()
