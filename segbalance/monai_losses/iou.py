"""Soft IoU (soft Jaccard) loss of Rahman & Wang, the SoftIoU baseline of the Recall-loss paper (Tian et al.
2022)."""

from __future__ import annotations

from torch import Tensor

from segbalance.monai_losses.dice import _RegionLoss
from segbalance.monai_losses.inputs import Prepared
from segbalance.monai_losses.registry import register

__all__ = ["SoftIoULoss", "soft_iou_loss"]


@register("iou")
class SoftIoULoss(_RegionLoss):
    """Soft IoU loss ``L_c = 1 − (Σ z g + smooth_nr) / (Σ (z + g − z g) + smooth_dr)`` (Rahman & Wang 2016;
    Ma 2020, §3.4; Tian et al.'s (2022) SoftIoU).

    Per (image, class) ``(B, C')`` or per class ``(C',)`` with ``batch=True``, then ``reduction``. Equal to
    MONAI ``DiceLoss(jaccard=True)`` for hard (0/1) targets; for soft targets MONAI's
    ``Σ z² + Σ g² − Σ z g`` (with ``squared_pred``) differs.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[[[0.5, 0.5]], [[0.5, 0.5]]]])
        >>> target = torch.tensor([[[[1, 1]]]])
        >>> flags = dict(softmax=False, sigmoid=False, include_background=False, smooth_nr=0, smooth_dr=0)
        >>> round(float(SoftIoULoss(**flags)(probs, target)), 4)  # 1 - 1 / (1 + 2 - 1)
        0.5
    """

    def per_class(self, p: Prepared) -> Tensor:
        s = self.stats(p)
        return 1.0 - (s.tp + self.smooth_nr) / (s.sum_pred + s.sum_gt - s.tp + self.smooth_dr)

    def forward_prepared(self, p: Prepared) -> Tensor:
        return self.reduce_region(self.per_class(p), p, self.batch)


def soft_iou_loss(logits: Tensor, target: Tensor, **kwargs) -> Tensor:
    """Functional form of :class:`SoftIoULoss`."""
    return SoftIoULoss(**kwargs)(logits, target)
