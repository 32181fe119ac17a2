"""nnU-Net's sliding-window inference with many tiles per forward pass.

``nnUNetPredictor`` runs every tile of a frame, and every mirrored copy of it, as its own
forward pass with batch size 1. :class:`BatchedSlidingWindow` gathers the tiles of several
frames, with their mirrored copies, into batches of up to ``tiles_per_batch`` network inputs.
Everything else is nnU-Net's own: the padding (``pad_nd_image``), the tile positions
(``_internal_get_sliding_window_slicers``), the Gaussian weights (``compute_gaussian``),
autocast on CUDA, the half-precision accumulators, and the order in which tiles are added
into them, so the logits equal the predictor's up to the rounding of a convolution run
at another batch size.

:func:`heart_uncertainty` turns a frame's final logits into one uncertainty score (mean normalised
entropy over the voxels predicted as heart), for either predictor.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_gaussian
from torch import nn

#: A tile's position: (channels, [slice index,] one slice per patch axis), as nnU-Net builds it.
Slicer = tuple[slice | int, ...]


@dataclass
class _Window:
    """One frame on its way through the sliding window."""

    data: torch.Tensor  # padded (channels, *spatial), on the device
    revert: tuple[slice, ...]  # undoes the padding
    slicers: list[Slicer]
    logits: torch.Tensor  # half (heads, *spatial): Gaussian-weighted sum of the tiles' predictions
    weights: torch.Tensor  # half (*spatial): sum of the Gaussian weights


def heart_uncertainty(logits: torch.Tensor) -> float | None:
    """Mean normalised softmax entropy of a frame's final logits ``(classes, *spatial)`` over the voxels whose
    argmax is not background (class 0): entropy / log(classes), so 0 (certain) to 1 (uniform). None when no
    voxel is predicted as heart.

    Computed on the logits as the network leaves them (averaged over folds and mirrored copies, at the
    network's resolution, before resampling to the image), so it exists with or without TTA and ensembles.
    """
    classes = logits.shape[0]
    if classes < 2:
        return None
    values = logits.float()
    heart = values.argmax(0) != 0
    if not bool(heart.any()):
        return None
    log_p = torch.log_softmax(values[:, heart], dim=0)  # (classes, heart voxels)
    entropy = -(log_p.exp() * log_p).sum(0) / math.log(classes)
    return min(1.0, max(0.0, float(entropy.mean())))


def default_tiles_per_batch(device: torch.device) -> int:
    """Network inputs per forward pass when the settings leave it open: small on a CPU, large on a GPU."""
    return 256 if device.type == "cuda" else 8


class BatchedSlidingWindow:
    """Batched sliding-window logits of preprocessed frames, with a loaded ``nnUNetPredictor``'s model.

    Parameters
    ----------
    predictor
        An initialised predictor; its network, plans, folds, mirroring and step size are used.
    tiles_per_batch
        Network inputs per forward pass (a tile and each of its mirrored copies count one each).
    """

    def __init__(self, predictor: nnUNetPredictor, tiles_per_batch: int) -> None:
        if tiles_per_batch < 1:
            raise ValueError(f"tiles_per_batch must be at least 1, got {tiles_per_batch}")
        self.predictor = predictor
        self.device = predictor.device
        self.patch_size = tuple(predictor.configuration_manager.patch_size)
        self.heads = predictor.label_manager.num_segmentation_heads
        self.networks = self._networks_per_fold(predictor)
        mirror_axes = predictor.allowed_mirroring_axes if predictor.use_mirroring else None
        axes = [m + 2 for m in mirror_axes] if mirror_axes else []
        self.flips: list[tuple[int, ...]] = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
        self.tiles_per_pass = max(1, tiles_per_batch // (len(self.flips) + 1))
        self.gaussian = (compute_gaussian(self.patch_size, sigma_scale=1.0 / 8, value_scaling_factor=10,
                                          device=self.device) if predictor.use_gaussian else None)

    @staticmethod
    def _networks_per_fold(predictor: nnUNetPredictor) -> list[nn.Module]:
        """One copy of the network per fold, its weights loaded once (nnU-Net reloads them for every frame)."""
        networks = []
        for params in predictor.list_of_parameters:
            network = copy.deepcopy(getattr(predictor.network, "_orig_mod", predictor.network))
            network.load_state_dict(params)
            networks.append(network.to(predictor.device).eval())
        return networks

    @torch.inference_mode()
    def logits(self, frames: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Logits of each preprocessed frame ``(channels, *spatial)``, on the CPU in half precision.

        Equal, frame for frame, to ``nnUNetPredictor.predict_logits_from_preprocessed_data``: the
        folds' logits are summed on the CPU in fold order and divided by their number.
        """
        return [ensemble for ensemble, _ in self.logits_with_folds(frames)]

    @torch.inference_mode()
    def logits_with_folds(self, frames: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """``(ensemble logits, [each fold's logits])`` of each preprocessed frame, on the CPU in half precision.

        The ensemble's logits are those of :meth:`logits`; each fold's are its own sliding window (averaged over
        its mirrored copies), kept for the quality signals (:mod:`workers.inference.quality_signals`).
        """
        folds: list[list[torch.Tensor]] = [[] for _ in frames]
        total: list[torch.Tensor] | None = None
        for network in self.networks:
            per_frame = [f.to("cpu") for f in self._sliding_window(network, frames)]
            for kept, fold_logits in zip(folds, per_frame, strict=True):
                kept.append(fold_logits)
            if total is None:
                total = [f.clone() for f in per_frame] if len(self.networks) > 1 else per_frame
            else:
                total = [t.add_(f) for t, f in zip(total, per_frame, strict=True)]
        if total is None:
            raise RuntimeError("the predictor holds no network parameters (no fold was loaded)")
        if len(self.networks) > 1:
            for t in total:
                t /= len(self.networks)
        return list(zip(total, folds, strict=True))

    def _sliding_window(self, network: nn.Module, frames: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        autocast = torch.autocast(self.device.type) if self.device.type == "cuda" else nullcontext()
        with autocast:
            windows = [self._window(frame) for frame in frames]
            tiles = [(w, s) for w in windows for s in w.slicers]
            for batch in _chunks(tiles, self.tiles_per_pass):
                inputs = torch.stack([w.data[s] for w, s in batch])
                if self.device.type == "cuda" and len(batch) < self.tiles_per_pass:
                    # One batch shape on a GPU: cuDNN searches its algorithms once, not for every remainder.
                    inputs = torch.cat([inputs, inputs.new_zeros((self.tiles_per_pass - len(batch),
                                                                  *inputs.shape[1:]))])
                predictions = self._mirror_and_predict(network, inputs)[:len(batch)]
                if self.gaussian is not None:
                    predictions *= self.gaussian
                for (window, slicer), prediction in zip(batch, predictions, strict=True):
                    window.logits[slicer] += prediction
                    window.weights[slicer[1:]] += self.gaussian if self.gaussian is not None else 1
            results = []
            for w in windows:
                torch.div(w.logits, w.weights, out=w.logits)
                if torch.any(torch.isinf(w.logits)):
                    raise RuntimeError("infinite logits in the sliding-window sum (half-precision overflow)")
                results.append(w.logits[(slice(None), *w.revert[1:])])
        return results

    def _window(self, frame: torch.Tensor) -> _Window:
        data, revert = pad_nd_image(frame, self.patch_size, "constant", {"value": 0}, True, None)
        data = data.to(self.device)
        slicers = self.predictor._internal_get_sliding_window_slicers(data.shape[1:])
        logits = torch.zeros((self.heads, *data.shape[1:]), dtype=torch.half, device=self.device)
        weights = torch.zeros(data.shape[1:], dtype=torch.half, device=self.device)
        return _Window(data, tuple(revert), slicers, logits, weights)

    def _mirror_and_predict(self, network: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """nnU-Net's ``_internal_maybe_mirror_and_predict`` for a batch, with every mirrored copy in one pass."""
        if not self.flips:
            return network(inputs)
        batch = torch.cat([inputs, *(torch.flip(inputs, axes) for axes in self.flips)])
        outputs = network(batch).split(len(inputs))
        prediction = outputs[0]
        for axes, output in zip(self.flips, outputs[1:], strict=True):
            prediction += torch.flip(output, axes)
        prediction /= len(self.flips) + 1
        return prediction


def _chunks(items: Sequence[tuple[_Window, Slicer]], size: int) -> Iterator[Sequence[tuple[_Window, Slicer]]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
