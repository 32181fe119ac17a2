"""Segment study frames with a trained nnU-Net v2 model, inside the calling process.

Length: one module on purpose: it is one class, :class:`Segmenter`, whose pipelined steps share its state.

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

nnU-Net resamples each frame to the model's spacing before anything else; a header with an
absurd spacing (100 mm pixels) would make that array enormous. The resampled size is
computed from the shape and spacing first, and a frame above ``max_resampled_voxels`` is
refused with a :class:`~heartseg.errors.StudyError` before anything is allocated.

When the model folder holds nnU-Net's ``postprocessing.pkl`` (written by ``determine_postprocessing``,
``python -m workers.training.recipe postprocess``) and postprocessing is on (``HEARTSEG_POSTPROCESSING``,
default), its rules (keep the largest connected component of a structure, or of the whole foreground) are
applied to every label map with nnU-Net's ``apply_postprocessing``, and the fingerprint covers the file.

Each frame also gets its quality signals from the logits the folds computed anyway
(:func:`~workers.inference.quality_signals.frame_quality`: the ensemble's uncertainty, and per structure each
fold's soft self-Dice and entropy, the folds' agreement and the volume) and, when the model folder has a
``quality_calibration.json``, a predicted Dice per structure (:mod:`workers.quality`); they are handed to
``segment_frames``' callback as a :class:`~workers.quality.FrameQuality`. nnU-Net's own predictor
(``predictor="nnunet"``) gives only the ensemble's logits, so its signals treat the ensemble as one network.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import load_pickle
from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing

from heartseg.errors import StudyError
from heartseg.models import POSTPROCESSING_FILE, ModelError, check_trusted, model_files, model_fingerprint
from heartseg.settings import Settings
from heartseg.studies.model import Study
from workers.inference.batched import BatchedSlidingWindow, default_tiles_per_batch
from workers.inference.quality_signals import frame_quality
from workers.inference.resampling import use_torch_resampling
from workers.monitoring import observe_stage
from workers.quality import FrameQuality, QualityCalibration, load_calibration

#: Which code computes the sliding-window logits.
PredictorKind = Literal["batched", "nnunet"]
#: Preprocessed frames waiting for the device, and exported frames waiting for the writer, at most.
PIPELINE_DEPTH = 4
#: The most voxels a frame may have once resampled to the model's spacing (64 Mi: about 80 times the largest
#: ACDC frame's 0.83 M at the shipped model's 1.5625 mm; a 256 x 256 frame with 100 mm pixels would have 2.7 G).
MAX_RESAMPLED_VOXELS = 64 * 1024 * 1024

#: on_labels(index, labels, quality) of :meth:`Segmenter.segment_frames`.
OnLabels = Callable[[int, np.ndarray, FrameQuality | None], None]
#: A frame's ensemble logits and each fold's.
FrameLogits = tuple[torch.Tensor, list[torch.Tensor]]

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_problem(name: str) -> str | None:
    """Why the device ``name`` (``HEARTSEG_DEVICE``) cannot be used here, or None when it can."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return (f"HEARTSEG_DEVICE={name} but torch {torch.__version__} finds no CUDA device (CUDA_VISIBLE_DEVICES="
                f"{visible if visible is not None else 'unset'}; built for CUDA {torch.version.cuda or 'none'}): "
                "start the worker with --devices cpu, or on a GPU host")
    return None


def describe_device(name: str) -> str:
    """The device ``name`` resolves to, with the GPU's name: ``cuda:0 (NVIDIA H100 80GB HBM3)`` or ``cpu``."""
    device = resolve_device(name)
    if device.type == "cuda":
        index = device.index or 0
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return device.type


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
    fold_pass
        How the batched predictor runs the folds over a batch of tiles: ``loop`` or ``vmap``
        (:class:`~workers.inference.batched.BatchedSlidingWindow`).
    resampling
        ``plans``: the model's own resampling; ``torch``: nnU-Net's torch resampling on the device
        (:mod:`workers.inference.resampling`).
    max_resampled_voxels
        Frames with more voxels than this once resampled to the model's spacing are refused (StudyError).
    postprocessing
        Apply the folder's ``postprocessing.pkl`` when it has one (the fingerprint then covers it).
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
        fold_pass: str = "loop",
        resampling: str = "plans",
        max_resampled_voxels: int = MAX_RESAMPLED_VOXELS,
        postprocessing: bool = True,
    ) -> None:
        self.model_dir = check_trusted(Path(model_dir), trusted_roots)
        #: Whether label maps are postprocessed: asked for and the folder has the rules.
        self.postprocessing = postprocessing and (self.model_dir / POSTPROCESSING_FILE).is_file()
        self.fingerprint = model_fingerprint(self.model_dir, folds, checkpoint, postprocessing=self.postprocessing)
        self._pp_fns, self._pp_kwargs = self._load_postprocessing() if self.postprocessing else ([], [])
        try:
            #: Signals to predicted Dice (None: the folder has no calibration, so no predicted Dice).
            self.calibration: QualityCalibration | None = load_calibration(self.model_dir)
        except ValueError as exc:
            raise ModelError(str(exc)) from exc
        self.use_mirroring = use_mirroring
        self.max_resampled_voxels = max_resampled_voxels
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
        self._load(use_folds, checkpoint)
        if resampling == "torch":
            use_torch_resampling(self._predictor.configuration_manager, self.device)
        self.resampling = resampling
        self.predictor_kind = predictor
        self._batched = (BatchedSlidingWindow(self._predictor, tiles_per_batch or default_tiles_per_batch(self.device),
                                              fold_pass=fold_pass)
                         if predictor == "batched" else None)
        self._device_lock = threading.Lock()
        logger.info("loaded model %s (%s) on %s, %s predictor, postprocessing %s", self.model_dir,
                    self.fingerprint[:12], self.device, predictor,
                    ", ".join(f"{f.__name__}({k})" for f, k in zip(self._pp_fns, self._pp_kwargs, strict=True))
                    if self.postprocessing else "off")

    def _load_postprocessing(self) -> tuple[list[Callable[..., np.ndarray]], list[dict[str, Any]]]:
        """nnU-Net's postprocessing functions and their arguments, as ``nnUNetv2_apply_postprocessing`` reads them
        (a pickle: the folder is trusted); a file that cannot be read is a :class:`ModelError` naming it."""
        path = self.model_dir / POSTPROCESSING_FILE
        try:
            fns, kwargs = load_pickle(str(path))
            fns, kwargs = list(fns), [dict(k) for k in kwargs]
        except Exception as exc:
            raise ModelError(f"{path}: cannot load the postprocessing ({type(exc).__name__}: "
                             f"{(str(exc).splitlines() or [''])[0]})") from exc
        if len(fns) != len(kwargs) or not all(callable(f) for f in fns):
            raise ModelError(f"{path}: not nnU-Net's postprocessing (functions and their arguments)")
        return fns, kwargs

    def postprocess(self, labels: np.ndarray) -> np.ndarray:
        """The folder's postprocessing applied to a label map (any axis order: connected components do not
        depend on it); the labels unchanged when postprocessing is off or the folder has none."""
        if not self._pp_fns:
            return labels
        return np.asarray(apply_postprocessing(labels, self._pp_fns, self._pp_kwargs), dtype=np.uint8)

    def _load(self, folds: tuple[int | str, ...] | None, checkpoint: str) -> None:
        """Load the plans and every fold's weights; a file that cannot be read is a :class:`ModelError` naming it."""
        try:
            self._predictor.initialize_from_trained_model_folder(str(self.model_dir), folds, checkpoint)
        except (RuntimeError, OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as exc:
            broken = next((path for path in model_files(self.model_dir, [str(f) for f in folds] if folds else None,
                                                        checkpoint) if path.name == checkpoint and not _loads(path)),
                           self.model_dir)
            what = "cannot load the checkpoint" if broken != self.model_dir else "cannot load the model"
            raise ModelError(f"{broken}: {what} ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc

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
            fold_pass=settings.fold_pass,
            resampling=settings.resampling,
            postprocessing=settings.postprocessing,
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

    def segment_with_uncertainty(self, image: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, float | None]:
        """Segment one 3D frame: its label map (as :meth:`segment`) and its uncertainty, the mean normalised softmax
        entropy over the voxels predicted as heart (0 to 1; None when no voxel is)."""
        labels, quality = self.segment_with_quality(image, spacing)
        return labels, None if quality is None else quality.uncertainty

    def segment_with_quality(self, image: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray,
                                                                                          FrameQuality | None]:
        """Segment one 3D frame: its label map (as :meth:`segment`) and its quality signals, with a predicted Dice
        per structure when the model has a calibration (None for a region-based model)."""
        return self._run([image], spacing, None)[0]

    def segment_frames(self, images: Iterable[np.ndarray], spacing: Sequence[float],
                       on_labels: OnLabels | None = None) -> list[np.ndarray]:
        """Segment the frames of one study (one geometry), pipelined.

        Parameters
        ----------
        images
            3D frames in ``(x, y, z)`` order, read lazily: a generator is consumed at most
            ``PIPELINE_DEPTH`` frames ahead of the device.
        spacing
            ``(x, y, z)`` voxel size in mm, shared by the frames.
        on_labels
            Called with (index, label map, quality) for each frame in order, in the export thread, while the
            next frames are on the device; a writer of masks goes here. ``quality`` is the frame's
            :class:`~workers.quality.FrameQuality` (None for a region-based model).

        Returns
        -------
        list of numpy.ndarray
            uint8 label maps (postprocessed when :attr:`postprocessing`), in the order of ``images``.
        """
        return [labels for labels, _ in self._run(images, spacing, on_labels)]

    def _run(self, images: Iterable[np.ndarray], spacing: Sequence[float],
             on_labels: OnLabels | None) -> list[tuple[np.ndarray, FrameQuality | None]]:
        """(labels, quality) of each frame, pipelined (see :meth:`segment_frames`)."""
        zyx_spacing = [float(s) for s in reversed(tuple(spacing))]
        results: list[tuple[np.ndarray, FrameQuality | None]] = []
        with ThreadPoolExecutor(1, "heartseg-preprocess") as pre, ThreadPoolExecutor(1, "heartseg-export") as post:
            frames = (pre.submit(self._preprocess, image, zyx_spacing) for image in images)
            exporting: deque[Future[tuple[np.ndarray, FrameQuality | None]]] = deque()
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

    def resampled_shape(self, shape: Sequence[int], spacing: Sequence[float]) -> tuple[int, ...]:
        """The ``(x, y, z)`` shape of a frame of ``shape`` and ``spacing`` (mm, ``(x, y, z)``) once nnU-Net has
        resampled it to the model's spacing (as its preprocessor computes it, before cropping, so never less).

        Raises :class:`StudyError` for a spacing that is not positive and finite.
        """
        if len(shape) != 3 or len(spacing) != 3:
            raise StudyError("image", f"expected a 3D frame and its spacing, got shape {tuple(shape)} and spacing "
                                      f"{tuple(spacing)}")
        if not all(math.isfinite(float(s)) and float(s) > 0 for s in spacing):
            raise StudyError("image", f"voxel spacing {tuple(float(s) for s in spacing)} mm is not positive and "
                                      "finite")
        transpose = list(self._predictor.plans_manager.transpose_forward)
        moved_shape = [int(shape[2 - axis]) for axis in transpose]  # (z, y, x) transposed as nnU-Net does
        moved_spacing = [float(spacing[2 - axis]) for axis in transpose]
        target = [float(s) for s in self._predictor.configuration_manager.spacing]
        if len(target) < 3:  # a 2D model keeps the spacing between slices
            target = [moved_spacing[0], *target]
        resampled = [round(old / new * n) for old, new, n in zip(moved_spacing, target, moved_shape, strict=True)]
        by_axis = dict(zip(transpose, resampled, strict=True))  # transposed axis -> (z, y, x) axis
        return tuple(by_axis[2 - axis] for axis in range(3))

    def check_size(self, shape: Sequence[int], spacing: Sequence[float], name: str | Path = "image") -> None:
        """Refuse a frame (:class:`StudyError` naming ``name`` and the sizes) that would have more than
        ``max_resampled_voxels`` voxels once resampled to the model's spacing; nothing is allocated."""
        resampled = self.resampled_shape(shape, spacing)
        voxels = math.prod(resampled)
        if voxels > self.max_resampled_voxels:
            target = "x".join(f"{s:g}" for s in reversed(self._predictor.configuration_manager.spacing))
            raise StudyError(name, f"{'x'.join(map(str, shape))} voxels of {'x'.join(f'{float(s):g}' for s in spacing)}"
                                   f" mm would be {'x'.join(map(str, resampled))} = {voxels:,} voxels resampled to the "
                                   f"model's {target} mm, more than the {self.max_resampled_voxels:,} segmented; "
                                   "is the voxel spacing in the header right?")

    def _preprocess(self, image: np.ndarray, zyx_spacing: list[float]) -> dict[str, Any]:
        """nnU-Net's preprocessing of one frame (nnU-Net works in SimpleITK's (z, y, x) order), after
        :meth:`check_size`."""
        if image.ndim != 3:
            raise ValueError(f"expected a 3D frame, got shape {image.shape}")
        self.check_size(image.shape, list(reversed(zyx_spacing)))
        started = time.perf_counter()
        zyx = np.ascontiguousarray(image.transpose(2, 1, 0), dtype=np.float32)[None]
        predictor = self._predictor
        adapter = PreprocessAdapterFromNpy([zyx], [None], [{"spacing": zyx_spacing}], [None], predictor.plans_manager,
                                           predictor.dataset_json, predictor.configuration_manager,
                                           num_threads_in_multithreaded=1, verbose=False)
        item: dict[str, Any] = next(adapter)
        observe_stage("preprocess", time.perf_counter() - started)
        return item

    def _logits(self, frames: list[torch.Tensor]) -> list[FrameLogits]:
        """Sliding-window logits of preprocessed frames, the ensemble's and each fold's, on the CPU; one study's
        forward passes at a time."""
        with self._device_lock:
            started = time.perf_counter()
            logits: list[FrameLogits]
            if self._batched is not None:
                logits = self._batched.logits_with_folds(frames)
            else:
                ensembles = [self._predictor.predict_logits_from_preprocessed_data(f).cpu() for f in frames]
                logits = [(ensemble, [ensemble]) for ensemble in ensembles]
            elapsed = time.perf_counter() - started
        for _ in frames:
            observe_stage("forward", elapsed / len(frames))
        return logits

    def _export(self, frame_logits: FrameLogits, properties: dict[str, Any], index: int,
                on_labels: OnLabels | None) -> tuple[np.ndarray, FrameQuality | None]:
        """nnU-Net's export of logits to a label map in the source geometry, back in (x, y, z) order, then the
        postprocessing; with the quality signals from the logits at the network's resolution and, with a
        calibration, the predicted Dice."""
        predictor = self._predictor
        logits, fold_logits = frame_logits
        started = time.perf_counter()
        zyx_labels = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, predictor.plans_manager, predictor.configuration_manager, predictor.label_manager,
            properties, return_probabilities=False)
        labels = self.postprocess(np.ascontiguousarray(np.asarray(zyx_labels).transpose(2, 1, 0)).astype(np.uint8))
        quality = None
        if not predictor.label_manager.has_regions:
            quality = frame_quality(fold_logits, logits, labels, properties["spacing"])
            if self.calibration is not None:
                quality = self.calibration.apply(quality)
        observe_stage("export", time.perf_counter() - started)
        if on_labels is not None:
            on_labels(index, labels, quality)
        return labels, quality

    def segment_study(self, study: Study, frames: Sequence[int] | None = None) -> dict[int, np.ndarray]:
        """Label maps of the given frames (default: every loaded frame), keyed by frame number."""
        numbers = study.frame_numbers if frames is None else tuple(frames)
        labels = self.segment_frames((study.frame(n).image for n in numbers), study.spacing)
        return dict(zip(numbers, labels, strict=True))


def _loads(checkpoint: Path) -> bool:
    """Whether torch can read the checkpoint file (on the CPU)."""
    try:
        torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception:
        return False
    return True
