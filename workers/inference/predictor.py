"""Segment study frames with a trained nnU-Net v2 model, inside the calling process.

The model is loaded once (:class:`Segmenter`) and reused for every frame. Inference goes
through ``nnUNetPredictor.predict_single_npy_array``, which starts no child processes, so
it runs inside a Celery worker (``predict_from_files`` spawns pools and would not).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from heartseg.models import check_trusted, model_fingerprint
from heartseg.settings import Settings
from heartseg.studies.model import Study
from workers.monitoring import observe_stage

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
        logger.info("loaded model %s (%s) on %s", self.model_dir, self.fingerprint[:12], self.device)

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
        if image.ndim != 3:
            raise ValueError(f"expected a 3D frame, got shape {image.shape}")
        # nnU-Net works in SimpleITK's (z, y, x) order, with spacing to match.
        zyx = np.ascontiguousarray(image.transpose(2, 1, 0), dtype=np.float32)[None]
        properties = {"spacing": [float(s) for s in reversed(tuple(spacing))]}
        labels = self._predict(zyx, properties)
        return np.ascontiguousarray(np.asarray(labels).transpose(2, 1, 0)).astype(np.uint8)

    def _predict(self, zyx: np.ndarray, properties: dict) -> np.ndarray:
        """``nnUNetPredictor.predict_single_npy_array``'s three steps, each timed for the worker's metrics."""
        predictor = self._predictor
        started = time.perf_counter()
        adapter = PreprocessAdapterFromNpy([zyx], [None], [properties], [None], predictor.plans_manager,
                                           predictor.dataset_json, predictor.configuration_manager,
                                           num_threads_in_multithreaded=1, verbose=False)
        item = next(adapter)
        preprocessed = time.perf_counter()
        logits = predictor.predict_logits_from_preprocessed_data(item["data"]).cpu()
        forwarded = time.perf_counter()
        labels = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, predictor.plans_manager, predictor.configuration_manager, predictor.label_manager,
            item["data_properties"], return_probabilities=False)
        exported = time.perf_counter()
        observe_stage("preprocess", preprocessed - started)
        observe_stage("forward", forwarded - preprocessed)
        observe_stage("export", exported - forwarded)
        return labels

    def segment_study(self, study: Study, frames: Sequence[int] | None = None) -> dict[int, np.ndarray]:
        """Label maps of the given frames (default: every loaded frame), keyed by frame number."""
        numbers = study.frame_numbers if frames is None else tuple(frames)
        return {n: self.segment(study.frame(n).image, study.spacing) for n in numbers}
