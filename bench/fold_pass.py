"""Benchmark: the folds of an ensemble over each batch of tiles, back to back (``loop``) or vectorised (``vmap``).

``python -m bench.fold_pass [--model DIR] [--patients N] [--frames N] [--device cpu|cuda] [--json FILE]`` times
:class:`workers.inference.batched.BatchedSlidingWindow`'s forward passes (mirroring on) of the ED and ES frames of
ACDC validation patients (phantom frames without the shared data) with each ``fold_pass``, and reports seconds per
frame and the largest difference between the two passes' logits.

With ``--stand-in-folds K`` and a model folder of fewer folds it times an ensemble of K networks of the shipped
architecture: fold 0's weights plus seeded noise (1 % of each tensor's standard deviation) in a scratch copy of
the folder. Such folds measure speed only; their masks mean nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from heartseg.models import available_folds
from heartseg.settings import Settings
from workers.inference.batched import FOLD_PASSES


def stand_in_model(model_dir: Path, folds: int, out: Path) -> Path:
    """A copy of ``model_dir`` with ``folds`` folds: fold 0 and noisy copies of it (speed measurements only)."""
    import torch

    target = out / model_dir.name
    shutil.copytree(model_dir, target)
    source = target / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    generator = torch.Generator().manual_seed(2026)
    for fold in range(1, folds):
        weights = {}
        for name, tensor in checkpoint["network_weights"].items():
            if tensor.is_floating_point() and tensor.numel() > 1:
                noise = torch.randn(tensor.shape, generator=generator) * float(tensor.float().std()) * 0.01
                tensor = (tensor.float() + noise).to(tensor.dtype)
            weights[name] = tensor
        (target / f"fold_{fold}").mkdir()
        torch.save({**checkpoint, "network_weights": weights}, target / f"fold_{fold}" / "checkpoint_final.pth")
    return target


def measure(model_dir: Path, settings: Settings, n_patients: int, repeats: int,
            n_frames: int | None = None) -> dict[str, Any]:
    """Seconds per frame of each fold pass, and how far their logits are apart."""
    import torch

    from bench.inference import frames
    from workers.inference.batched import BatchedSlidingWindow
    from workers.inference.predictor import Segmenter

    folds = available_folds(model_dir)
    segmenter = Segmenter.from_settings(settings.model_copy(update={
        "model_dir": model_dir, "folds": list(folds), "predictor": "batched", "use_mirroring": True,
        "trusted_model_roots": [*settings.trusted_model_roots, model_dir.parent]}))
    predictor = segmenter._predictor
    images = frames(settings, n_patients)[:n_frames or None]
    data = [segmenter._preprocess(image, [spacing[2], spacing[1], spacing[0]])["data"]
            for _, image, spacing in images]
    tiles = settings.tiles_per_batch or (256 if segmenter.device.type == "cuda" else 8)
    result: dict[str, Any] = {"folds": len(folds), "frames": len(data), "device": segmenter.device.type,
                              "tiles_per_batch": tiles, "threads": torch.get_num_threads()}
    windows = {fold_pass: BatchedSlidingWindow(predictor, tiles, fold_pass=fold_pass) for fold_pass in FOLD_PASSES}
    if segmenter.device.type == "cuda":
        for window in windows.values():
            window.logits_with_folds(data[:1])  # warm-up: cuDNN's algorithm search, the allocator
    logits: dict[str, Any] = {}
    times: dict[str, list[float]] = {fold_pass: [] for fold_pass in FOLD_PASSES}
    for repeat in range(repeats):  # the passes alternate, so a change in the machine's load hits both
        for fold_pass in FOLD_PASSES if repeat % 2 == 0 else FOLD_PASSES[::-1]:
            started = time.perf_counter()
            logits[fold_pass] = windows[fold_pass].logits_with_folds(data)
            if segmenter.device.type == "cuda":
                torch.cuda.synchronize()
            times[fold_pass].append(time.perf_counter() - started)
    for fold_pass in FOLD_PASSES:
        result[f"{fold_pass}_s_per_frame"] = round(min(times[fold_pass]) / len(data), 4)
        result[f"{fold_pass}_s_per_frame_each_repeat"] = [round(t / len(data), 4) for t in times[fold_pass]]
    result["max_abs_logit_difference"] = max(
        float((a[0].float() - b[0].float()).abs().max()) for a, b in zip(logits["loop"], logits["vmap"], strict=True))
    result["voxels_differing"] = sum(int((a[0].argmax(0) != b[0].argmax(0)).sum())
                                     for a, b in zip(logits["loop"], logits["vmap"], strict=True))
    result["voxels"] = sum(int(a[0][0].numel()) for a in logits["loop"])
    return result


def main() -> None:
    """Print (and with ``--json`` write) the measurements."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped one)")
    parser.add_argument("--stand-in-folds", type=int, default=0, help="time K stand-in folds (see above)")
    parser.add_argument("--patients", type=int, default=2)
    parser.add_argument("--frames", type=int, default=None, help="at most N of the patients' frames")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes of each kind, alternating")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    settings = Settings(device=args.device)
    model_dir = args.model or settings.model_dir
    with tempfile.TemporaryDirectory() as scratch:
        stand_in = args.stand_in_folds > len(available_folds(model_dir))  # a folder with the folds uses its own
        if stand_in:
            model_dir = stand_in_model(model_dir, args.stand_in_folds, Path(scratch))
        result = measure(model_dir, settings, args.patients, args.repeats, args.frames)
    result["stand_in_folds"] = stand_in
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
