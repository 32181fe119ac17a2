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

import os
from typing import Any

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class HeartSegTrainer(nnUNetTrainer):
    """``nnUNetTrainer`` with fewer epochs and iterations per epoch (class attributes set by the recipe)."""

    epochs: int = 48
    iterations_per_epoch: int = 100
    val_iterations_per_epoch: int = 10
    stop_after_epoch: int | None = None
    """Stop (with a checkpoint to continue from) once this many epochs are done; the schedule is unchanged."""

    def __init__(
        self,
        plans: dict[str, Any],
        configuration: str,
        fold: int,
        dataset_json: dict[str, Any],
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnunetv2's own signature
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.epochs
        self.num_iterations_per_epoch = self.iterations_per_epoch
        self.num_val_iterations_per_epoch = self.val_iterations_per_epoch
        self.save_every = 1  # an interrupted run loses at most one epoch

    def save_checkpoint(self, filename: str) -> None:
        """nnunetv2's checkpoint, written beside and then renamed, so a killed run never leaves half a file."""
        partial = filename + ".partial"
        super().save_checkpoint(partial)
        if os.path.isfile(partial):
            os.replace(partial, filename)

    def run_training(self) -> None:
        """nnunetv2's training loop, able to pause after :attr:`stop_after_epoch` epochs."""
        self.on_train_start()
        last = self.num_epochs if self.stop_after_epoch is None else min(self.num_epochs, self.stop_after_epoch)
        for _ in range(self.current_epoch, last):
            self.on_epoch_start()
            self.on_train_epoch_start()
            outputs = [self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)]
            self.on_train_epoch_end(outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
        if self.current_epoch >= self.num_epochs:
            self.on_train_end()
        else:  # on_epoch_end already wrote checkpoint_latest.pth (save_every = 1)
            for loader in (self.dataloader_train, self.dataloader_val):
                if loader is not None and hasattr(loader, "_finish"):
                    loader._finish()
