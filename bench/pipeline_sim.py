"""What a GPU host would see, by simulation: the segmentation worker's CPU stages around a simulated device.

**A simulation, not a GPU measurement.** The network's forward passes are replaced by a fixed delay per
frame (default: the forward seconds per frame measured on the lent H200 in ``docs/gpu-runs/``, batched,
TTA on; else 20 ms), holding the device lock as the real forward does. Everything else is the worker's
real code on this machine's CPU: reading the study (NIfTI), nnU-Net's preprocessing, nnU-Net's export of
logits of the frame's shape, encoding and writing the mask.

- pipeline **off**: one study at a time, one frame at a time, every stage after the other;
- pipeline **on**: ``Segmenter.segment_frames`` (preprocess and export threads beside the forward passes,
  masks written as they come) with ``studies_in_flight`` studies on threads, as a worker runs them.

It reports the CPU seconds per frame of each stage (pipeline off, where stages do not overlap), the
device's busy and idle fractions, the pipeline efficiency (simulated forward seconds / wall seconds) with
the pipeline on and off, and how many CPU cores one such GPU needs to stay at least 80 % busy. Writes
``docs/bench-pipeline-sim.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heartseg.settings import Settings
from heartseg.storage import open_store, sha256_hex
from heartseg.studies.acdc import load_acdc_patient
from workers.inference.predictor import Segmenter
from workers.pipeline import encode_mask
from workers.training.split import VALIDATION_PATIENTS

GPU_RUNS = Path("docs/gpu-runs")
FALLBACK_FORWARD_S = 0.020
BUSY_TARGET = 0.8


def measured_forward_s() -> tuple[float, str]:
    """Forward seconds per frame of the batched predictor on the lent GPU (one study at a time), and its source."""
    parts = [json.loads(p.read_text()) for p in sorted(GPU_RUNS.glob("gpu-*.json"))]
    if not parts:
        return FALLBACK_FORWARD_S, "no GPU measurement in docs/gpu-runs: the 20 ms default"
    forward = sum(p["runs"]["batched-c1"]["forward_s"] for p in parts)
    frames = sum(p["runs"]["batched-c1"]["frames"] for p in parts)
    return forward / frames, (f"measured on the {parts[0]['device']['gpu']}, {parts[0]['device']['date_utc']} "
                              f"UTC: batched predictor, TTA on, forward stage per frame over {frames} frames")


class SimulatedDevice:
    """Stands in for the forward passes: sleeps ``seconds_per_frame`` per frame under the device lock and
    returns zero logits of the frame's shape (so the real export has real work)."""

    def __init__(self, segmenter: Segmenter, seconds_per_frame: float) -> None:
        self.segmenter = segmenter
        self.seconds_per_frame = seconds_per_frame
        self.heads = segmenter._predictor.label_manager.num_segmentation_heads
        self.busy_s = 0.0
        self.lock = threading.Lock()

    def __call__(self, frames: list[torch.Tensor]) -> list[torch.Tensor]:
        with self.lock:
            time.sleep(self.seconds_per_frame * len(frames))
            self.busy_s += self.seconds_per_frame * len(frames)
        return [torch.zeros((self.heads, *f.shape[1:]), dtype=torch.half) for f in frames]


def timed(stages: dict[str, float], stage: str, started: float) -> float:
    now = time.perf_counter()
    stages[stage] += now - started
    return now


def run_off(segmenter: Segmenter, device: SimulatedDevice, folders: list[Path], out: Path) -> dict[str, Any]:
    """Every stage after the other, one frame at a time."""
    store = open_store(str(out))
    stages: dict[str, float] = defaultdict(float)
    frames = 0
    started = time.perf_counter()
    for folder in folders:
        t = time.perf_counter()
        study = load_acdc_patient(folder, cine=False)
        t = timed(stages, "load", t)
        for frame in study.frames:
            item = segmenter._preprocess(frame.image, [float(s) for s in reversed(study.spacing)])
            t = timed(stages, "preprocess", t)
            logits = device([item["data"]])[0]
            t = timed(stages, "forward (simulated)", t)
            labels = segmenter._export(logits, item["data_properties"], 0, None)
            t = timed(stages, "export", t)
            data = encode_mask(labels, study)
            store.put(f"off/{study.study_id}/{frame.number}.nii.gz", data)
            sha256_hex(data)
            t = timed(stages, "write", t)
            frames += 1
    return {"wall_s": time.perf_counter() - started, "frames": frames, "stages": dict(stages)}


def run_on(segmenter: Segmenter, device: SimulatedDevice, folders: list[Path], out: Path,
           studies_in_flight: int) -> dict[str, Any]:
    """The worker's way: pipelined frames, ``studies_in_flight`` studies on threads."""
    store = open_store(str(out))

    def one(folder: Path) -> int:
        study = load_acdc_patient(folder, cine=False)

        def write(index: int, labels: np.ndarray, uncertainty: float | None) -> None:
            data = encode_mask(labels, study)
            store.put(f"on/{study.study_id}/{index}.nii.gz", data)
            sha256_hex(data)

        return len(segmenter.segment_frames((f.image for f in study.frames), study.spacing, write))

    started = time.perf_counter()
    with ThreadPoolExecutor(studies_in_flight) as pool:
        frames = sum(pool.map(one, folders))
    return {"wall_s": time.perf_counter() - started, "frames": frames}


def main() -> None:
    """Simulate, print and write the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forward-s", type=float, default=None, help="simulated forward seconds per frame")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", type=Path, default=Path("docs/bench-pipeline-sim.md"))
    args = parser.parse_args()
    settings = Settings(device="cpu", use_mirroring=True)
    forward_s, source = (args.forward_s, "given on the command line") if args.forward_s else measured_forward_s()
    folders = [settings.acdc_training_dir / p for p in VALIDATION_PATIENTS]
    if not folders[0].is_dir():
        raise SystemExit(f"ACDC data not found under {settings.acdc_training_dir} (HEARTSEG_SHARED_DATA)")
    segmenter = Segmenter.from_settings(settings)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for mode in ["off", *[f"on-{n}" for n in args.in_flight]]:
            device = SimulatedDevice(segmenter, forward_s)
            segmenter._logits = device  # type: ignore[method-assign]
            run_off(segmenter, device, folders[:1], Path(scratch))  # warm-up
            device.busy_s = 0.0
            if mode == "off":
                result = run_off(segmenter, device, folders, Path(scratch))
                stages = {k: v / result["frames"] for k, v in result["stages"].items()}
            else:
                result = run_on(segmenter, device, folders, Path(scratch), int(mode.split("-")[1]))
            rows.append((mode, result["frames"], result["wall_s"], device.busy_s))
    cpu_per_frame = sum(v for k, v in stages.items() if not k.startswith("forward"))
    cores = BUSY_TARGET * cpu_per_frame / forward_s
    report = render(rows, stages, forward_s, source, cpu_per_frame, cores)
    print(report)
    args.out.write_text(report)


def render(rows: list[tuple[str, int, float, float]], stages: dict[str, float], forward_s: float, source: str,
           cpu_per_frame: float, cores: float) -> str:
    """The Markdown report."""
    lines = [
        "# What a GPU host would see: a simulation",
        "",
        "**Simulated device, real CPU stages.** The network's forward passes are replaced by a delay of "
        f"**{1000 * forward_s:.1f} ms per frame** ({source}); every other stage is the worker's real code on this "
        f"machine's CPU. Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m bench.pipeline_sim` on "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} threads; the ED and "
        f"ES frames of the {len(VALIDATION_PATIENTS)} ACDC validation patients (`bench/pipeline_sim.py`).",
        "",
        "CPU seconds per frame of each stage (pipeline off, one stage after the other):",
        "",
        "| " + " | ".join(stages) + " |",
        "|" + "---|" * len(stages),
        "| " + " | ".join(f"{v:.3f}" for v in stages.values()) + " |",
        "",
        "| pipeline | studies in flight | frames | wall s | frames/s | device busy | device idle | "
        "pipeline efficiency |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, frames, wall, busy in rows:
        on = mode != "off"
        lines.append(f"| {'on' if on else 'off'} | {mode.split('-')[1] if on else 1} | {frames} | {wall:.1f} | "
                     f"{frames / wall:.2f} | {100 * busy / wall:.0f} % | {100 * (1 - busy / wall):.0f} % | "
                     f"{busy / wall:.2f} |")
    lines += [
        "",
        "Pipeline efficiency = simulated forward seconds / wall seconds (the device's busy fraction).",
        "",
        f"**CPU cores for one GPU at {100 * BUSY_TARGET:.0f} % busy**: the CPU stages take {cpu_per_frame:.3f} s "
        f"per frame against {forward_s:.4f} s on the device, so keeping the device {100 * BUSY_TARGET:.0f} % busy "
        f"needs about **{cores:.1f} cores** of such CPU work running beside it "
        f"({BUSY_TARGET} x {cpu_per_frame:.3f} / {forward_s:.4f}), if those stages scaled over cores without loss. "
        "Threads in one Python process do not quite (nnU-Net's resampling holds the GIL part of the time), and "
        "this machine has only its cores to give. The real device's figures, with the GPU host's cores, are in "
        "`docs/bench-gpu.md`.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
