"""Common base of the segbalance nnU-Net trainers: loss construction, per-epoch schedules, loss state."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn

from segbalance.monai_losses.schedules import set_schedulers_epoch
from segbalance.nnunet_losses import build_nnunet_loss
from segbalance.trainers.diagnostics import RareClassDiagnostics
from segbalance.trainers.guard import NeverPredictedGuard
from segbalance.trainers.instance import InstanceMapsTrainer

__all__ = [
    "SegBalanceTrainer",
    "SegBalanceLossTrainer",
    "loss_state_file",
    "compile_loss_requested",
    "COMPILE_ENV",
]

LOSS_STATE_SUFFIX = ".segbalance_loss.pt"
#: ``SEGBALANCE_COMPILE_LOSS=1``: the trainers compile their segbalance losses (nnU-Net's own
#: ``nnUNet_compile`` compiles the network only)
COMPILE_ENV = "SEGBALANCE_COMPILE_LOSS"


def compile_loss_requested() -> bool:
    """Whether ``SEGBALANCE_COMPILE_LOSS`` asks for compiled losses (``1/true/yes/on``; unset, empty or
    ``0/false/no/off``: no); ``ValueError`` on any other value."""
    value = os.environ.get(COMPILE_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{COMPILE_ENV} must be 1/true/yes/on or 0/false/no/off, got {value!r}")


def loss_state_file(checkpoint_file: str) -> str:
    """The file beside an nnU-Net checkpoint that holds the loss's tensors (``checkpoint_x.pth`` →
    ``checkpoint_x.segbalance_loss.pt``)."""
    root, _ = os.path.splitext(checkpoint_file)
    return root + LOSS_STATE_SUFFIX


class SegBalanceLossTrainer(nnUNetTrainer):
    """``nnUNetTrainer`` whose ``_build_loss`` returns the segbalance loss ``loss_name(**loss_kwargs)``.

    The classes in :mod:`segbalance.trainers.generated` only set ``loss_name``/``loss_kwargs`` (from the
    table); this base adds what every such loss needs from the trainer:

    * ``segbalance_loss``: the loss in nnU-Net's conventions (see
      :func:`~segbalance.nnunet_losses.build_nnunet_loss`: ignore label, region-based datasets through the
      loss's sigmoid form, spacing per deep-supervision scale, nnU-Net's deep-supervision weights with the
      DDP safeguard), logged;
    * per-epoch schedules (boundary pairings' α = start + epoch·step): set from ``current_epoch`` in
      ``on_train_epoch_start``, so a resumed run (``--c``) continues them without any saved state;
    * the plan's ``batch_dice`` (``configuration_manager.batch_dice``, nnU-Net's switch for its Dice term):
      the ``batch`` flag of the losses that have one follows it unless the loss arguments set ``batch``;
    * ``SEGBALANCE_COMPILE_LOSS=1``: every segbalance loss built (each deep-supervision scale's instance of
      a spacing-aware loss too) is compiled by :func:`~segbalance.monai_losses.compile_loss`;
    * loss tensors that are real state (e.g. the recall loss's EMA counts with ``ema``): written beside each
      checkpoint as ``<checkpoint>.segbalance_loss.pt`` (tensors only, read with ``weights_only=True``) and
      restored by ``load_checkpoint``. nnU-Net's checkpoint itself is left as nnU-Net writes it.
    """

    loss_name: str | None = None
    loss_kwargs: dict = {}

    def _build_loss(self):
        if self.loss_name is None:
            raise NotImplementedError(
                f"{type(self).__name__} sets no loss_name and does not override _build_loss"
            )
        return self.segbalance_loss(self.loss_name, **copy.deepcopy(self.loss_kwargs))

    def segbalance_loss(self, name: str, **loss_kwargs) -> nn.Module:
        """Build the registered loss ``name`` for this trainer's dataset and configuration."""
        lm = self.label_manager
        dataset = f"dataset {self.plans_manager.dataset_name!r}"
        compile_losses = compile_loss_requested()
        batch_dice = bool(self.configuration_manager.batch_dice)
        from segbalance.nnunet_losses import instance_map_kind

        kind = instance_map_kind(name)
        if lm.has_regions and kind:
            raise ValueError(
                f"{dataset} is region-based (dataset.json has 'regions_class_order'), and "
                f"{type(self).__name__}'s loss {name!r} scores the connected components of exclusive labels: "
                "instance losses do not support region-based datasets. Train it with plain labels, or with a "
                f"trainer that works with regions: {', '.join(_region_trainers())}."
            )
        if kind:
            scored = 0 if loss_kwargs.get("include_background", False) else 1
            self.instance_maps_spec = {
                "kind": kind, "channels": list(range(scored, lm.num_segmentation_heads)),
            }
        if lm.has_regions:
            from segbalance.monai_losses.registry import supports_multilabel

            if not supports_multilabel(name, loss_kwargs):
                raise ValueError(_regions_message(type(self).__name__, name, dataset))
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
            dataset_name=dataset,
            batch_dice=batch_dice,
            compile_losses=compile_losses,
        )
        self.segbalance_loss_config = {"name": name, "kwargs": loss_kwargs}
        self.print_to_log_file(
            f"segbalance loss: {json.dumps(self.segbalance_loss_config, default=str)} "
            f"(ignore label {lm.ignore_label}, regions {lm.has_regions}, "
            f"deep supervision {self.enable_deep_supervision}, batch_dice {batch_dice}"
            f"{', compiled (' + COMPILE_ENV + ')' if compile_losses else ''})"
        )
        return loss

    def sync_loss_schedules(self) -> list[float]:
        """Put every loss scheduler at ``self.current_epoch`` (α of epoch e: start + e·step); their α."""
        return [] if self.loss is None else set_schedulers_epoch(self.loss, self.current_epoch)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        for alpha in self.sync_loss_schedules():
            self.print_to_log_file(f"segbalance loss schedule: alpha = {np.round(alpha, decimals=4)}")

    def training_loss(self) -> nn.Module:
        """``self.loss`` without the diagnostics wrapper, so its saved state has the same keys either way."""
        from segbalance.trainers.diagnostics import DiagnosedLoss

        return self.loss.loss if isinstance(self.loss, DiagnosedLoss) else self.loss

    def loss_state(self) -> dict[str, torch.Tensor]:
        """The loss's non-empty tensors from its ``state_dict`` (e.g. EMA counts); ``{}`` when it has none."""
        if self.loss is None:
            return {}
        state = self.training_loss().state_dict()
        return {k: v.detach().cpu() for k, v in state.items() if isinstance(v, torch.Tensor) and v.numel()}

    def save_checkpoint(self, filename: str) -> None:
        super().save_checkpoint(filename)
        if self.local_rank != 0 or self.disable_checkpointing:
            return
        state, side = self.loss_state(), loss_state_file(filename)
        if state:
            torch.save(state, side)
        elif os.path.isfile(side):
            os.remove(side)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        if not isinstance(filename_or_checkpoint, str) or self.loss is None:
            return
        side = loss_state_file(filename_or_checkpoint)
        if os.path.isfile(side):
            state = torch.load(side, map_location=self.device, weights_only=True)
            unexpected = self.training_loss().load_state_dict(state, strict=False).unexpected_keys
            self.print_to_log_file(
                f"segbalance loss state restored from {side}: {sorted(set(state) - set(unexpected))}"
                + (f"; not in this loss (ignored): {unexpected}" if unexpected else "")
            )

    def on_train_end(self):
        super().on_train_end()
        # nnU-Net deletes checkpoint_latest.pth at the end; its loss state goes with it
        latest = loss_state_file(os.path.join(self.output_folder, "checkpoint_latest.pth"))
        if self.local_rank == 0 and os.path.isfile(latest):
            os.remove(latest)


class SegBalanceTrainer(
    NeverPredictedGuard, RareClassDiagnostics, InstanceMapsTrainer, SegBalanceLossTrainer
):
    """The base of every segbalance trainer: :class:`SegBalanceLossTrainer` with the never-predicted guard
    (:class:`~segbalance.trainers.guard.NeverPredictedGuard`, on by default) and the gradient-balance
    diagnostics (:class:`~segbalance.trainers.diagnostics.RareClassDiagnostics`,
    ``SEGBALANCE_DIAGNOSTICS=1``) and, for the instance losses, their maps made in the data loader
    (:class:`~segbalance.trainers.instance.InstanceMapsTrainer`).
    """


def _region_trainers() -> list[str]:
    """The table's trainers whose loss has a per-channel sigmoid (multi-label) form."""
    from segbalance.monai_losses.registry import supports_multilabel
    from segbalance.trainers.table import trainer_specs

    return [n for n, s in trainer_specs().items() if supports_multilabel(s.loss, s.kwargs)]


def _regions_message(trainer: str, loss: str, dataset: str) -> str:
    from segbalance.monai_losses.registry import multilabel_names

    working = _region_trainers()
    return (
        f"{dataset} is region-based (dataset.json has 'regions_class_order'; nnU-Net trains it with sigmoid "
        f"outputs and one-hot region targets), but {trainer}'s loss {loss!r} has no per-channel sigmoid "
        f"(multi-label) form. Trainers that work with regions: {', '.join(working)} (and their "
        f"_5epochs/_debug variants), or nnUNetTrainerSegBalance with one of the losses "
        f"{', '.join(multilabel_names())}."
    )
