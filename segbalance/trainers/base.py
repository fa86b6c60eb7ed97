"""Common base of the segbalance nnU-Net trainers: loss construction, per-epoch schedules, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn

from segbalance.monai_losses.boundary import set_schedulers_epoch
from segbalance.nnunet_losses import build_nnunet_loss, loss_schedulers

__all__ = ["SegBalanceTrainer"]

CHECKPOINT_KEY = "segbalance_loss_state"


class SegBalanceTrainer(nnUNetTrainer):
    """``nnUNetTrainer`` whose ``_build_loss`` returns a segbalance loss (subclasses pick which one).

    Subclasses override only ``_build_loss``, returning ``self.segbalance_loss(name, **kwargs)``. This base
    adds what every such loss needs from the trainer:

    * ``segbalance_loss``: the loss in nnU-Net's conventions (see
      :func:`~segbalance.nnunet_losses.build_nnunet_loss`: ignore label, regions refused, spacing per
      deep-supervision scale, nnU-Net's deep-supervision weights with the DDP safeguard), logged;
    * per-epoch schedules (boundary pairings' α): set to the current epoch in ``on_train_epoch_start``;
    * the loss's state (``state_dict``, e.g. the α schedule) saved in and restored from the checkpoint.
    """

    def segbalance_loss(self, name: str, **loss_kwargs) -> nn.Module:
        """Build the registered loss ``name`` for this trainer's dataset and configuration."""
        lm = self.label_manager
        loss = build_nnunet_loss(
            name,
            loss_kwargs,
            ignore_label=lm.ignore_label if lm.has_ignore_label else None,
            has_regions=lm.has_regions,
            deep_supervision_scales=self._get_deep_supervision_scales(),
            is_ddp=self.is_ddp,
            compiled=self._do_i_compile(),
            spacing=self.configuration_manager.spacing,
            patch_size=self.configuration_manager.patch_size,
            dataset_name=f"dataset {self.plans_manager.dataset_name!r}",
        )
        self.segbalance_loss_config = {"name": name, "kwargs": loss_kwargs}
        self.print_to_log_file(
            f"segbalance loss: {json.dumps(self.segbalance_loss_config, default=str)} "
            f"(ignore label {lm.ignore_label}, deep supervision {self.enable_deep_supervision})"
        )
        return loss

    def sync_loss_schedules(self) -> list[float]:
        """Put every loss scheduler at ``self.current_epoch`` (α of epoch e: start + e·step); their α."""
        return [] if self.loss is None else set_schedulers_epoch(self.loss, self.current_epoch)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        for alpha in self.sync_loss_schedules():
            self.print_to_log_file(f"segbalance loss schedule: alpha = {np.round(alpha, decimals=4)}")

    def save_checkpoint(self, filename: str) -> None:
        super().save_checkpoint(filename)
        if self.local_rank != 0 or self.disable_checkpointing or self.loss is None:
            return
        schedulers = [s.state_dict() for s in loss_schedulers(self.loss)]
        if not schedulers:
            return
        checkpoint = torch.load(filename, map_location="cpu", weights_only=False)
        checkpoint[CHECKPOINT_KEY] = {"schedulers": schedulers}
        torch.save(checkpoint, filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        checkpoint = filename_or_checkpoint
        if isinstance(checkpoint, str):
            checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=False)
        state = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
        if state and self.loss is not None:
            for sched, sched_state in zip(loss_schedulers(self.loss), state["schedulers"]):
                sched.load_state_dict(sched_state)
