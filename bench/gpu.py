"""GPU benchmark: nnU-Net's predictor against HeartSeg's batched predictor on a CUDA device, TTA on.

Run by ``bench/gpu.sh`` on a machine with a GPU, over frames packed by :mod:`bench.gpu_frames`.
Each study (a patient's ED and ES frames) goes through :meth:`Segmenter.segment_frames`, the
worker's own path (preprocess, forward passes, export), with

- (b) ``predictor="nnunet"``: nnU-Net's sliding window, one tile per forward pass;
- (c) ``predictor="batched"``: tiles and mirrored copies in batched passes; one study at a time,
  and then several studies at once on threads sharing the model, as a worker with a threads pool.

It records seconds per study, the seconds the forward stage held the device, peak GPU memory, and
the voxels where (b) and (c) disagree, as JSON; ``bench.gpu_report`` turns the JSON into Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench import absent_modules
from bench.gpu_frames import PackedFrame, read

#: Compiled packages that nnunetv2 imports at module level but never calls when predicting from arrays.
ABSENT = ("SimpleITK", "blosc2", "imagecodecs", "jpeg_ls", "_CharLS")


def forward_seconds() -> float:
    """Seconds the forward stage has held the device so far in this process (the workers' histogram)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("heartseg_stage_seconds_sum", {"stage": "forward"}) or 0.0


def studies_of(frames: list[PackedFrame]) -> list[tuple[str, list[PackedFrame]]]:
    """Frames grouped by patient, ED first."""
    grouped: dict[str, list[PackedFrame]] = defaultdict(list)
    for frame in frames:
        grouped[frame.patient].append(frame)
    return [(p, sorted(f, key=lambda x: x.phase != "ED")) for p, f in grouped.items()]


def run(segmenter: Any, studies: list[tuple[str, list[PackedFrame]]], concurrency: int) -> dict[str, Any]:
    """Segment every study (``concurrency`` at a time); labels, seconds per study, wall, device-held seconds."""
    import torch

    def one(study: tuple[str, list[PackedFrame]]) -> tuple[str, list[np.ndarray], float]:
        started = time.perf_counter()
        labels = segmenter.segment_frames([f.image for f in study[1]], study[1][0].spacing)
        return study[0], labels, time.perf_counter() - started

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    held = forward_seconds()
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, studies))
    wall = time.perf_counter() - started
    return {"labels": {p: labels for p, labels, _ in results}, "study_s": {p: s for p, _, s in results},
            "wall_s": wall, "forward_s": forward_seconds() - held,
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0, "concurrency": concurrency}


def summary(result: dict[str, Any], n_frames: int) -> dict[str, Any]:
    """The JSON-ready figures of one run (labels left out)."""
    return {"frames": n_frames, "wall_s": result["wall_s"], "frames_per_s": n_frames / result["wall_s"],
            "forward_s": result["forward_s"], "device_held_fraction": result["forward_s"] / result["wall_s"],
            "peak_gpu_mib": result["peak_gpu_mib"], "concurrency": result["concurrency"],
            "study_s": result["study_s"]}


def disagreement(a: dict[str, list[np.ndarray]], b: dict[str, list[np.ndarray]]) -> dict[str, int]:
    """Voxels that differ between two runs' label maps, and the voxels compared."""
    differing = total = 0
    for patient, labels in a.items():
        for x, y in zip(labels, b[patient], strict=True):
            differing += int((x != y).sum())
            total += x.size
    return {"differing_voxels": differing, "voxels": total}


def device_description() -> dict[str, str]:
    """The GPU, driver and software this run used."""
    import torch

    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, check=False).stdout.strip()
    except FileNotFoundError:
        smi = "no nvidia-smi"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"gpu": gpu, "nvidia_smi": smi, "torch": torch.__version__,
            "cuda": str(torch.version.cuda), "cpu_cores": str(os.cpu_count()), "python": platform.python_version(),
            "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M")}


def main() -> None:
    """Measure (b) and (c) on the packed frames; write JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=Path, required=True, help="folder packed by bench.gpu_frames")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--sweep", type=int, nargs="*", default=[64, 1024],
                        help="further tiles_per_batch values timed on the first 10 studies")
    parser.add_argument("--limit", type=int, default=None, help="only the first N studies (a dry run)")
    parser.add_argument("--device", default="cuda", help="'cpu' only for a dry run of this script")
    args = parser.parse_args()
    absent_modules.install(ABSENT)

    import torch

    from heartseg.settings import Settings
    from workers.inference.predictor import Segmenter

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures a GPU")
    studies = studies_of(list(read(args.frames)))[:args.limit]
    n_frames = sum(len(f) for _, f in studies)
    settings = Settings(device=args.device, use_mirroring=True)
    report: dict[str, Any] = {"device": device_description(), "studies": len(studies), "frames": n_frames,
                              "patients": [p for p, _ in studies], "runs": {}}
    print(json.dumps(report["device"]), flush=True)
    labels: dict[str, dict[str, list[np.ndarray]]] = {}
    for kind in ("nnunet", "batched"):
        segmenter = Segmenter.from_settings(settings.model_copy(update={"predictor": kind}))
        run(segmenter, studies[:2], 1)  # warm-up: CUDA context, cuDNN's algorithm search
        for concurrency in ([1] if kind == "nnunet" else args.concurrency):
            result = run(segmenter, studies, concurrency)
            name = f"{kind}-c{concurrency}"
            report["runs"][name] = summary(result, n_frames)
            labels.setdefault(kind, result["labels"])
            print(name, {k: round(v, 3) for k, v in report["runs"][name].items() if isinstance(v, float)}, flush=True)
            _write(args.out, report)
        del segmenter
        torch.cuda.empty_cache()
    report["agreement"] = disagreement(labels["nnunet"], labels["batched"])
    print("agreement", report["agreement"], flush=True)
    _write(args.out, report)
    for budget in args.sweep:
        segmenter = Segmenter.from_settings(settings.model_copy(update={"tiles_per_batch": budget}))
        run(segmenter, studies[:2], 1)
        result = run(segmenter, studies[:10], 1)
        n = sum(len(f) for _, f in studies[:10])
        report["runs"][f"batched-c1-tiles{budget}-first10"] = summary(result, n)
        print(f"tiles {budget}", round(n / result["wall_s"], 2), "frames/s", flush=True)
        _write(args.out, report)
        del segmenter
    report["runs_median_study_s"] = {k: statistics.median(v["study_s"].values()) for k, v in report["runs"].items()}
    _write(args.out, report)


def _write(path: Path, report: dict[str, Any]) -> None:
    """Write what is measured so far (a run cut short still leaves its finished parts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
