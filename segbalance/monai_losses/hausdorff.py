"""Hausdorff distance loss from distance transforms (Karimi & Salcudean 2019; Ma 2020, §4.2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from segbalance.monai_losses.distance import unsigned_distance_map
from segbalance.monai_losses.distance_inputs import (
    DistanceLoss,
    check_dist,
    masked_spatial_mean,
    unsigned_from_signed,
)
from segbalance.monai_losses.inputs import Prepared
from segbalance.monai_losses.monai_hausdorff import HausdorffDTLoss  # noqa: F401  (MONAI's classes, re-exported)
from segbalance.monai_losses.registry import register

# HausdorffDTLoss is MONAI's class, from .monai_hausdorff
__all__ = ["HausdorffDTLoss", "HausdorffDistanceLoss", "hausdorff_dt_loss"]


@register("hd_dt")
class HausdorffDistanceLoss(DistanceLoss):
    """HD-DT loss ``L = mean_v (s_v − g_v)² · (d_G(v)^α + d_S(v)^α)`` (Ma 2020, §4.2; Karimi & Salcudean,
    IEEE TMI 2020, Eq. 8), per image and class, then ``reduction`` over (image, class).

    ``s`` are the probabilities, ``g`` the one-hot target, ``d_G`` and ``d_S`` the distance fields of the
    target and of the thresholded prediction ``s > 0.5``: every voxel's distance to the nearest voxel on
    the other side of the mask (:func:`~.distance.unsigned_distance_map`), in the units of ``spacing``.
    ``d_S`` is recomputed at every step without gradient (exact EDT on the logits' device), so gradients
    flow only through ``s``. Empty and full masks have no boundary: their field is 0 (no NaN/inf), so an
    empty prediction is weighted by ``d_G^α`` alone. Ignored voxels take the target's value in the
    thresholded prediction (the logits there cannot change ``d_S``) and are left out of the mean.

    Equal to MONAI ``HausdorffDTLoss(alpha, include_background, to_onehot_y=True, softmax=True)`` (or
    ``sigmoid=True`` for ``C == 1``) with ``batch`` and ``reduction`` alike, at unit spacing and without
    ignored voxels; ours adds ``spacing``, ``ignore_index``, precomputed ``dist`` and computes distances on
    the GPU instead of item by item with scipy on the host. ``reduction="none"`` gives MONAI's shape
    ``(B, K', 1, …)`` (``(1, K', 1, …)`` with ``batch``).

    Args:
        alpha: exponent of the distances (2).
        spacing: voxel size per spatial axis (array order) or one number; default 1.
        include_background: score class 0 too (default ``False``, as MONAI).
        batch: mean over the batch and voxels together per class (MONAI's ``batch``).
        distance_method: EDT implementation (:func:`~.distance.euclidean_distance_transform`).
        other arguments: see :class:`~.base.SegLoss`.

    Example:
        >>> import torch
        >>> target = torch.tensor([[[[0, 1, 1, 0]]]])              # (B, 1, H=1, W=4)
        >>> logits = torch.zeros(1, 2, 1, 4)                       # s = 0.5 everywhere, S empty
        >>> float(HausdorffDistanceLoss()(logits, target))               # 0.25 · d_G² = 0.25 · 1
        0.25
    """

    ddp_statistics = "voxel sums (`batch=True`)"

    def __init__(
        self,
        *,
        alpha: float = 2.0,
        spacing: float | Sequence[float] | None = None,
        include_background: bool = False,
        batch: bool = False,
        distance_method: str = "auto",
        **kwargs,
    ) -> None:
        super().__init__(
            spacing=spacing, distance_method=distance_method, include_background=include_background, **kwargs
        )
        if not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ValueError(f"alpha must be a positive number, got {alpha!r}")
        self.alpha = float(alpha)
        self.batch = batch

    @torch.compiler.disable  # host EDT: one clean graph break under torch.compile
    @torch.no_grad()
    def distance_weights(
        self, p: Prepared, probs: Tensor, channels: slice, dist: Tensor | None = None
    ) -> Tensor:
        """``d_G^α + d_S^α`` for the scored channels ``(B, K', *spatial)``; ``probs`` of those channels."""
        spacing = self.spacing_for(p)
        truth = p.onehot[:, channels] > 0.5
        pred = probs.detach() > 0.5
        if p.valid is not None:
            pred = torch.where(p.valid.unsqueeze(1), pred, truth)
        if dist is None:
            fields = unsigned_distance_map(torch.cat([truth, pred], 1), spacing, method=self.distance_method)
            d_truth, d_pred = fields.split(truth.shape[1], dim=1)
        else:
            phi = check_dist(dist, p, self.check_finite)
            phi = phi if p.binary else phi[:, channels]
            d_truth = unsigned_from_signed(phi, truth, spacing)
            d_pred = unsigned_distance_map(pred, spacing, method=self.distance_method)
        return d_truth.pow(self.alpha) + d_pred.pow(self.alpha)

    def forward_prepared(self, p: Prepared, dist: Tensor | None = None) -> Tensor:
        channels = p.class_channels(self.include_background)
        probs = p.probs[:, channels]  # outside no_grad: Prepared caches it for every term
        weights = self.distance_weights(p, probs, channels, dist)
        error = (probs - p.onehot[:, channels]).square()
        per_item = masked_spatial_mean(error * weights, p.valid, self.batch)
        return self.reduce_region(per_item, p, self.batch)


def hausdorff_dt_loss(logits: Tensor, target: Tensor, dist: Tensor | None = None, **kwargs) -> Tensor:
    """Functional form of :class:`HausdorffDistanceLoss`."""
    return HausdorffDistanceLoss(**kwargs)(logits, target, dist)
