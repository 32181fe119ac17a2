"""HeartSeg's nnU-Net trainer: nnunetv2's own ``nnUNetTrainer`` with a schedule that 2 CPU cores finish.

Import this module only after the nnU-Net path variables are set (see :mod:`workers.training.recipe`):
nnunetv2 reads them when it is first imported.

The network, loss, augmentation and optimiser are exactly ``nnUNetTrainer``'s; only the
number of epochs, iterations per epoch and the checkpoint interval differ. The exported
checkpoint therefore names ``nnUNetTrainer`` as its trainer, so that any nnunetv2
installation (``nnUNetv2_predict``, nnunetv2's predictor) can load the shipped model
without knowing this class.
"""

from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class HeartSegTrainer(nnUNetTrainer):
    """``nnUNetTrainer`` with fewer epochs and iterations per epoch (class attributes set by the recipe)."""

    epochs: int = 40
    iterations_per_epoch: int = 100
    val_iterations_per_epoch: int = 10

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnunetv2's own signature
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.epochs
        self.num_iterations_per_epoch = self.iterations_per_epoch
        self.num_val_iterations_per_epoch = self.val_iterations_per_epoch
        self.save_every = 1  # an interrupted run loses at most one epoch
