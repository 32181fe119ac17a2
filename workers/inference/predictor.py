"""Segment study frames with a trained nnU-Net v2 model, inside the calling process.

The model is loaded once (:class:`Segmenter`) and reused for every frame. Each frame goes
through nnU-Net's own three steps (preprocess, sliding-window logits, export), as
``nnUNetPredictor.predict_single_npy_array`` runs them, without child processes, so it runs
inside a Celery worker (``predict_from_files`` spawns pools and would not). The logits come
from :class:`~workers.inference.batched.BatchedSlidingWindow` (tiles of several frames per
forward pass) or, with ``predictor="nnunet"``, from nnU-Net's predictor itself.

:meth:`Segmenter.segment_frames` pipelines a study's frames: one thread preprocesses the
next frames and another exports (and hands to the caller's writer) the previous ones while
the calling thread runs the forward passes. A lock keeps the forward passes of studies
that share the segmenter (a worker's threads) one after the other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from heartseg.models import check_trusted, model_fingerprint
from heartseg.settings import Settings
from heartseg.studies.model import Study
from workers.inference.batched import BatchedSlidingWindow, default_tiles_per_batch
from workers.monitoring import observe_stage

#: Which code computes the sliding-window logits.
PredictorKind = Literal["batched", "nnunet"]
#: Preprocessed frames waiting for the device, and exported frames waiting for the writer, at most.
PIPELINE_DEPTH = 4

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Segmenter:
    """A loaded nnU-Net model that turns 3D frames into ACDC label maps.

    Parameters
    ----------
    model_dir
        nnU-Net trained-model folder (``dataset.json``, ``plans.json``, ``fold_X/``).
    trusted_roots
        Folders the model must lie in (checkpoints are pickles).
    folds
        Folds to ensemble; None uses every fold present.
    checkpoint
        Checkpoint file name inside each fold folder.
    use_mirroring
        Test-time augmentation by mirroring (slower, slightly better).
    tile_step_size
        Sliding-window step as a fraction of the patch size.
    device
        ``cuda``, ``cpu`` or ``auto``.
    predictor
        ``batched`` (tiles of several frames per forward pass) or ``nnunet`` (nnU-Net's own predictor,
        one tile per pass).
    tiles_per_batch
        Network inputs per forward pass of the batched predictor; None: 8 on a CPU, 256 on a GPU.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        trusted_roots: Sequence[Path],
        folds: Sequence[str] | None = None,
        checkpoint: str = "checkpoint_final.pth",
        use_mirroring: bool = True,
        tile_step_size: float = 0.5,
        device: str = "auto",
        predictor: PredictorKind = "batched",
        tiles_per_batch: int | None = None,
    ) -> None:
        self.model_dir = check_trusted(Path(model_dir), trusted_roots)
        self.fingerprint = model_fingerprint(self.model_dir, folds, checkpoint)
        self.use_mirroring = use_mirroring
        self.device = resolve_device(device)
        self._predictor = nnUNetPredictor(
            tile_step_size=tile_step_size,
            use_gaussian=True,
            use_mirroring=use_mirroring,
            perform_everything_on_device=True,
            device=self.device,
            verbose=False,
            verbose_preprocessing=False,
            allow_tqdm=False,
        )
        use_folds = tuple(int(f) if f != "all" else f for f in folds) if folds else None
        self._predictor.initialize_from_trained_model_folder(str(self.model_dir), use_folds, checkpoint)
        self.predictor_kind = predictor
        self._batched = (BatchedSlidingWindow(self._predictor, tiles_per_batch or default_tiles_per_batch(self.device))
                         if predictor == "batched" else None)
        self._device_lock = threading.Lock()
        logger.info("loaded model %s (%s) on %s, %s predictor", self.model_dir, self.fingerprint[:12], self.device,
                    predictor)

    @classmethod
    def from_settings(cls, settings: Settings, model_dir: Path | None = None,
                      use_mirroring: bool | None = None) -> Segmenter:
        """A segmenter configured by the settings (``model_dir`` and TTA may be overridden)."""
        return cls(
            model_dir or settings.model_dir,
            trusted_roots=settings.trusted_roots,
            folds=settings.folds,
            checkpoint=settings.checkpoint_name,
            use_mirroring=settings.use_mirroring if use_mirroring is None else use_mirroring,
            tile_step_size=settings.tile_step_size,
            device=settings.device,
            predictor=settings.predictor,
            tiles_per_batch=settings.tiles_per_batch,
        )

    def segment(self, image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """Segment one 3D frame.

        Parameters
        ----------
        image
            Intensities in HeartSeg's ``(x, y, z)`` order (see :mod:`heartseg.studies.model`).
        spacing
            ``(x, y, z)`` voxel size in mm.

        Returns
        -------
        numpy.ndarray
            uint8 ACDC label map with the image's shape and geometry.
        """
        return self.segment_frames([image], spacing)[0]

    def segment_frames(self, images: Iterable[np.ndarray], spacing: Sequence[float],
                       on_labels: Callable[[int, np.ndarray], None] | None = None) -> list[np.ndarray]:
        """Segment the frames of one study (one geometry), pipelined.

        Parameters
        ----------
        images
            3D frames in ``(x, y, z)`` order, read lazily: a generator is consumed at most
            ``PIPELINE_DEPTH`` frames ahead of the device.
        spacing
            ``(x, y, z)`` voxel size in mm, shared by the frames.
        on_labels
            Called with (index, label map) for each frame in order, in the export thread, while the next
            frames are on the device; a writer of masks goes here.

        Returns
        -------
        list of numpy.ndarray
            uint8 label maps, in the order of ``images``.
        """
        zyx_spacing = [float(s) for s in reversed(tuple(spacing))]
        results: list[np.ndarray] = []
        with ThreadPoolExecutor(1, "heartseg-preprocess") as pre, ThreadPoolExecutor(1, "heartseg-export") as post:
            frames = (pre.submit(self._preprocess, image, zyx_spacing) for image in images)
            exporting: deque[Future[np.ndarray]] = deque()
            for group in self._groups(frames):
                for item, logits in zip(group, self._logits([item["data"] for item in group]), strict=True):
                    exporting.append(post.submit(self._export, logits, item["data_properties"], len(results)
                                                 + len(exporting), on_labels))
                while len(exporting) > PIPELINE_DEPTH or (exporting and exporting[0].done()):
                    results.append(exporting.popleft().result())
            results.extend(future.result() for future in exporting)
        return results

    @staticmethod
    def _groups(frames: Iterable[Future[dict[str, Any]]]) -> Iterable[list[dict[str, Any]]]:
        """Preprocessed frames in groups for the device: as many as the preprocessing thread has ready (at least
        one), keeping up to ``PIPELINE_DEPTH`` frames in preparation; the time the device waits is observed."""
        source = iter(frames)
        waiting: deque[Future[dict[str, Any]]] = deque()
        for future in source:
            waiting.append(future)
            if len(waiting) >= PIPELINE_DEPTH:
                break
        while waiting:
            started = time.perf_counter()
            group = [waiting.popleft().result()]
            observe_stage("device_wait", time.perf_counter() - started)
            while waiting and waiting[0].done():
                group.append(waiting.popleft().result())
                observe_stage("device_wait", 0.0)  # one observation per frame: this one was ready
            for future in source:
                waiting.append(future)
                if len(waiting) >= PIPELINE_DEPTH:
                    break
            yield group

    def _preprocess(self, image: np.ndarray, zyx_spacing: list[float]) -> dict[str, Any]:
        """nnU-Net's preprocessing of one frame (nnU-Net works in SimpleITK's (z, y, x) order)."""
        if image.ndim != 3:
            raise ValueError(f"expected a 3D frame, got shape {image.shape}")
        started = time.perf_counter()
        zyx = np.ascontiguousarray(image.transpose(2, 1, 0), dtype=np.float32)[None]
        predictor = self._predictor
        adapter = PreprocessAdapterFromNpy([zyx], [None], [{"spacing": zyx_spacing}], [None], predictor.plans_manager,
                                           predictor.dataset_json, predictor.configuration_manager,
                                           num_threads_in_multithreaded=1, verbose=False)
        item: dict[str, Any] = next(adapter)
        observe_stage("preprocess", time.perf_counter() - started)
        return item

    def _logits(self, frames: list[torch.Tensor]) -> list[torch.Tensor]:
        """Sliding-window logits of preprocessed frames, on the CPU; one study's forward passes at a time."""
        with self._device_lock:
            started = time.perf_counter()
            if self._batched is not None:
                logits = self._batched.logits(frames)
            else:
                logits = [self._predictor.predict_logits_from_preprocessed_data(f).cpu() for f in frames]
            elapsed = time.perf_counter() - started
        for _ in frames:
            observe_stage("forward", elapsed / len(frames))
        return logits

    def _export(self, logits: torch.Tensor, properties: dict[str, Any], index: int,
                on_labels: Callable[[int, np.ndarray], None] | None) -> np.ndarray:
        """nnU-Net's export of logits to a label map in the source geometry, back in (x, y, z) order."""
        predictor = self._predictor
        started = time.perf_counter()
        zyx_labels = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, predictor.plans_manager, predictor.configuration_manager, predictor.label_manager,
            properties, return_probabilities=False)
        labels = np.ascontiguousarray(np.asarray(zyx_labels).transpose(2, 1, 0)).astype(np.uint8)
        observe_stage("export", time.perf_counter() - started)
        if on_labels is not None:
            on_labels(index, labels)
        return labels

    def segment_study(self, study: Study, frames: Sequence[int] | None = None) -> dict[int, np.ndarray]:
        """Label maps of the given frames (default: every loaded frame), keyed by frame number."""
        numbers = study.frame_numbers if frames is None else tuple(frames)
        labels = self.segment_frames((study.frame(n).image for n in numbers), study.spacing)
        return dict(zip(numbers, labels, strict=True))
