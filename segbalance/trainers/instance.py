"""Instance maps in nnU-Net's data loader, for the instance losses (``blob``, ``cc_dice_ce``).

:class:`InstanceMapsTransform` is a batchgeneratorsv2 transform that appends, per sample, one int16 channel
per network output channel to ``segmentation``: the connected-component ids (blob loss) or the Voronoi
regions of the components (CC-DiceCE) of that class in the augmented label map, computed with cc3d / scipy
(:mod:`segbalance.monai_losses.instance_maps`) at the patch's resolution and spacing. It runs after
nnU-Net's spatial and intensity transforms and **before** ``DownsampleSegForDSTransform``, so every
deep-supervision scale receives the maps downsampled by the same nearest-neighbour sampling as its
target: an id is > 0 exactly where that scale's target holds the class. The batch's targets are then
``(b, 1 + C, …)`` per scale; :class:`~segbalance.nnunet_losses.InstanceTargets` splits them again and
hands the maps to the loss. No connected-components pass runs in the loss or on the GPU.

:class:`InstanceMapsTrainer` (a mixin of every segbalance trainer, inert for other losses) inserts the
transform into nnU-Net's training and validation pipelines and keeps nnU-Net's online validation Dice on
channel 0 (the label map).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from segbalance.monai_losses.instance_maps import MAP_KINDS, channel_maps

__all__ = ["InstanceMapsTransform", "InstanceMapsTrainer", "insert_instance_transform"]


class InstanceMapsTransform(BasicTransform):
    """Append the instance maps of ``segmentation[0]`` as ``num_channels`` int16 channels.

    Args:
        kind: ``"components"`` or ``"voronoi"``.
        num_channels: the network's output channels ``C``; channel ``c`` holds the maps of label ``c``.
        channels: the labels whose maps are made (the loss's scored classes); the others stay 0.
        spacing: voxel spacing of the patch (array order) for the Voronoi distances.

    Voxels of nnU-Net's ignore label (the highest label + 1, no output channel) belong to no component;
    they are inside some Voronoi region, and the loss leaves them out of its sums.
    """

    def __init__(
        self,
        kind: str,
        num_channels: int,
        channels: Sequence[int],
        spacing: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if kind not in MAP_KINDS:
            raise ValueError(f"kind must be one of {MAP_KINDS}, got {kind!r}")
        self.kind = kind
        self.num_channels = int(num_channels)
        self.channels = [int(c) for c in channels]
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)

    def apply(self, data_dict, **params):
        seg = data_dict.get("segmentation")
        if seg is None:
            return data_dict
        if isinstance(seg, list):
            raise ValueError(
                "InstanceMapsTransform must run before DownsampleSegForDSTransform (the maps are downsampled "
                "with the target)"
            )
        labels = np.asarray(seg[0])
        spacing = None if self.spacing is None else self.spacing[-labels.ndim:]
        maps = np.zeros((self.num_channels, *labels.shape), dtype=np.int16)
        for c in self.channels:
            maps[c] = channel_maps(labels == c, self.kind, spacing)
        data_dict["segmentation"] = torch.cat([seg, torch.from_numpy(maps).to(seg.dtype)], dim=0)
        return data_dict


def insert_instance_transform(pipeline: BasicTransform, transform: InstanceMapsTransform) -> BasicTransform:
    """``pipeline`` with ``transform`` inserted before its deep-supervision downsampling (appended when it
    has none)."""
    if not isinstance(pipeline, ComposeTransforms):
        return ComposeTransforms([pipeline, transform])
    steps = list(pipeline.transforms)
    at = next((i for i, t in enumerate(steps) if isinstance(t, DownsampleSegForDSTransform)), len(steps))
    steps.insert(at, transform)
    return ComposeTransforms(steps)


class InstanceMapsTrainer(nnUNetTrainer):
    """Mixin: when the trainer's segbalance loss reads instance maps, make them in the data loader.

    ``instance_maps_spec`` is set by ``segbalance_loss`` (``None`` for every other loss): the map kind and
    the scored labels. nnU-Net builds the loss in ``initialize`` and the data loaders in ``on_train_start``,
    so the spec exists when the pipelines are built.
    """

    instance_maps_spec: dict | None = None

    def _instance_transform(self) -> InstanceMapsTransform | None:
        spec = self.instance_maps_spec
        if not spec:
            return None
        lm = self.label_manager
        return InstanceMapsTransform(
            spec["kind"],
            lm.num_segmentation_heads,
            spec["channels"],
            spacing=self.configuration_manager.spacing,
        )

    def get_training_transforms(self, *args, **kwargs):
        pipeline = super().get_training_transforms(*args, **kwargs)
        transform = self._instance_transform()
        return pipeline if transform is None else insert_instance_transform(pipeline, transform)

    def get_validation_transforms(self, *args, **kwargs):
        pipeline = super().get_validation_transforms(*args, **kwargs)
        transform = self._instance_transform()
        return pipeline if transform is None else insert_instance_transform(pipeline, transform)

    def validation_step(self, batch: dict) -> dict:
        if not self.instance_maps_spec:
            return super().validation_step(batch)
        # the loss gets the maps, nnU-Net's online Dice the label map (channel 0) only
        full = batch["target"]
        labels_only = [t[:, :1] for t in full] if isinstance(full, list) else full[:, :1]
        loss = self.loss

        def with_maps(output, _target):
            target = [t.to(self.device, non_blocking=True) for t in full] if isinstance(full, list) else (
                full.to(self.device, non_blocking=True))
            return loss(output, target)

        self.loss = with_maps
        try:
            return super().validation_step({**batch, "target": labels_only})
        finally:
            self.loss = loss
