"""Adapters from segbalance losses to nnU-Net v2 conventions.

Label-map targets, the ignore label, region-based targets, spacing per scale and deep supervision.

>>> from segbalance.nnunet_losses import build_nnunet_loss
>>> loss = build_nnunet_loss("ce", deep_supervision_scales=[[1, 1, 1], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]])
>>> [round(float(w), 4) for w in loss.weight_factors]
[0.6667, 0.3333, 0.0]
"""

from segbalance.extras import require

require("nnunetv2", needed_for="segbalance.nnunet_losses (nnU-Net v2 adapters)")

from segbalance.nnunet_losses.adapter import (
    InstanceTargets,
    RegionTargets,
    ScaleAwareLoss,
    accepts_kwarg,
    accepts_spacing,
    batch_dice_kwargs,
    build_nnunet_loss,
    check_regions_supported,
    instance_map_kind,
    loss_schedulers,
    region_loss_kwargs,
)
from segbalance.nnunet_losses.deep_supervision import deep_supervision_weights

__all__ = [
    "InstanceTargets",
    "instance_map_kind",
    "RegionTargets",
    "ScaleAwareLoss",
    "accepts_kwarg",
    "accepts_spacing",
    "batch_dice_kwargs",
    "build_nnunet_loss",
    "check_regions_supported",
    "deep_supervision_weights",
    "loss_schedulers",
    "region_loss_kwargs",
]
