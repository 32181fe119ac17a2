"""nnU-Net's sliding-window inference with many tiles per forward pass.

``nnUNetPredictor`` runs every tile of a frame, and every mirrored copy of it, as its own
forward pass with batch size 1. :class:`BatchedSlidingWindow` gathers the tiles of several
frames, with their mirrored copies, into batches of up to ``tiles_per_batch`` network inputs, and
runs every fold of the model over a batch before the next (the tiles move to the device once).
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

#: The ways :class:`BatchedSlidingWindow` runs the folds over a batch of tiles.
FOLD_PASSES = ("loop", "vmap")
#: A tile's position: (channels, [slice index,] one slice per patch axis), as nnU-Net builds it.
Slicer = tuple[slice | int, ...]


@dataclass
class _Window:
    """One frame on its way through the sliding window."""

    data: torch.Tensor  # padded (channels, *spatial), on the device
    revert: tuple[slice, ...]  # undoes the padding
    slicers: list[Slicer]
    logits: torch.Tensor  # half (folds, heads, *spatial): each fold's Gaussian-weighted sum of its tiles' predictions
    weights: torch.Tensor  # half (*spatial): sum of the Gaussian weights (the same for every fold)


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
    fold_pass
        How the folds meet a batch of tiles, which stays on the device for all of them: ``"loop"``, the
        networks back to back, or ``"vmap"``, one vectorised call over their stacked weights
        (``torch.func.stack_module_state`` with ``torch.func.vmap``). ``bench.fold_pass`` measures both.
    """

    def __init__(self, predictor: nnUNetPredictor, tiles_per_batch: int, fold_pass: str = "loop") -> None:
        if tiles_per_batch < 1:
            raise ValueError(f"tiles_per_batch must be at least 1, got {tiles_per_batch}")
        self.predictor = predictor
        self.device = predictor.device
        self.patch_size = tuple(predictor.configuration_manager.patch_size)
        self.heads = predictor.label_manager.num_segmentation_heads
        self.networks = self._networks_per_fold(predictor)
        if fold_pass not in FOLD_PASSES:
            raise ValueError(f"fold_pass must be one of {FOLD_PASSES}, got {fold_pass!r}")
        self.fold_pass = fold_pass if len(self.networks) > 1 else "loop"
        self._stacked = _StackedNetworks(self.networks) if self.fold_pass == "vmap" else None
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

        Equal, frame for frame, to ``nnUNetPredictor.predict_logits_from_preprocessed_data`` up to rounding:
        the mean of the folds' logits (nnU-Net sums them in half precision on the CPU, this in float32).
        """
        return [ensemble for ensemble, _ in self.logits_with_folds(frames)]

    @torch.inference_mode()
    def logits_with_folds(self, frames: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """``(ensemble logits, [each fold's logits])`` of each preprocessed frame, on the CPU in half precision.

        Every batch of tiles goes through all folds while it is on the device; each fold's logits are its own
        sliding window (averaged over its mirrored copies), kept for the quality signals
        (:mod:`workers.inference.quality_signals`); the ensemble's are their mean, as nnU-Net's.
        """
        results = []
        for per_fold in self._sliding_window(frames):
            ensemble = per_fold.float().mean(0).half() if len(per_fold) > 1 else per_fold[0].clone()
            results.append((ensemble.to("cpu"), list(per_fold.to("cpu").unbind(0))))
        return results

    def _sliding_window(self, frames: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each frame's logits ``(folds, heads, *spatial)``, on the device."""
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
                predictions = self._mirror_and_predict(inputs)[:, :len(batch)]  # (folds, tiles, heads, *patch)
                if self.gaussian is not None:
                    predictions *= self.gaussian
                for index, (window, slicer) in enumerate(batch):
                    window.logits[(slice(None), *slicer)] += predictions[:, index]
                    window.weights[slicer[1:]] += self.gaussian if self.gaussian is not None else 1
            results = []
            for w in windows:
                torch.div(w.logits, w.weights, out=w.logits)
                if torch.any(torch.isinf(w.logits)):
                    raise RuntimeError("infinite logits in the sliding-window sum (half-precision overflow)")
                results.append(w.logits[(slice(None), slice(None), *w.revert[1:])])
        return results

    def _window(self, frame: torch.Tensor) -> _Window:
        data, revert = pad_nd_image(frame, self.patch_size, "constant", {"value": 0}, True, None)
        data = data.to(self.device)
        slicers = self.predictor._internal_get_sliding_window_slicers(data.shape[1:])
        logits = torch.zeros((len(self.networks), self.heads, *data.shape[1:]), dtype=torch.half,
                             device=self.device)
        weights = torch.zeros(data.shape[1:], dtype=torch.half, device=self.device)
        return _Window(data, tuple(revert), slicers, logits, weights)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Every fold's output for ``batch``: ``(folds, *output shape)``."""
        if self._stacked is not None:
            return self._stacked(batch)
        return torch.stack([network(batch) for network in self.networks])

    def _mirror_and_predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """nnU-Net's ``_internal_maybe_mirror_and_predict`` for a batch and every fold, with every mirrored copy
        in the same pass: ``(folds, tiles, heads, *patch)``."""
        if not self.flips:
            return self._forward(inputs)
        batch = torch.cat([inputs, *(torch.flip(inputs, axes) for axes in self.flips)])
        outputs = self._forward(batch).split(len(inputs), dim=1)
        prediction = outputs[0]
        for axes, output in zip(self.flips, outputs[1:], strict=True):
            prediction += torch.flip(output, [axis + 1 for axis in axes])
        prediction /= len(self.flips) + 1
        return prediction


class _StackedNetworks:
    """Identical networks as one vectorised call over their stacked weights (PyTorch's ensembling recipe)."""

    def __init__(self, networks: Sequence[nn.Module]) -> None:
        from torch.func import stack_module_state

        self.params, self.buffers = stack_module_state(list(networks))
        self.base = copy.deepcopy(networks[0]).to("meta")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call, vmap

        def one(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(self.base, (params, buffers), (batch,))

        return vmap(one)(self.params, self.buffers)


def _chunks(items: Sequence[tuple[_Window, Slicer]], size: int) -> Iterator[Sequence[tuple[_Window, Slicer]]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
