"""Lovász-softmax loss of Berman, Rannen Triki & Blaschko (CVPR 2018), a baseline of the Recall-loss paper."""

from __future__ import annotations

import torch
from torch import Tensor

from segbalance.monai_losses.base import SegLoss
from segbalance.monai_losses.inputs import Prepared
from segbalance.monai_losses.registry import register

__all__ = ["LovaszSoftmaxLoss", "lovasz_softmax_loss", "lovasz_jaccard_grad"]

CLASS_MODES = ("present", "all")


def lovasz_jaccard_grad(gt_sorted: Tensor) -> Tensor:
    """Gradient of the Lovász extension of the Jaccard loss along sorted errors (Berman et al. Eq. 8–9).

    ``gt_sorted`` holds 0/1 ground truth ``(…, N)`` ordered by decreasing error; returns
    ``Δ(S_i) − Δ(S_{i−1})`` for the prefixes ``S_i`` of that order, ``Δ`` the Jaccard loss.
    """
    gts = gt_sorted.sum(-1, keepdim=True)
    intersection = gts - gt_sorted.cumsum(-1)
    union = gts + (1.0 - gt_sorted).cumsum(-1)
    jaccard = 1.0 - intersection / union.clamp_min(1e-12)
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


@register("lovasz")
class LovaszSoftmaxLoss(SegLoss):
    """Lovász-softmax loss ``L_c = Δ̄_J(m_c)``, ``m_{v,c} = |g_{v,c} − z_{v,c}|`` (Berman et al. Eq. 12).

    ``Δ̄_J`` is the Lovász extension of the Jaccard loss: errors sorted decreasingly, dotted with
    :func:`lovasz_jaccard_grad`; it is a tight convex surrogate of ``1 − IoU_c``, and at 0/1 errors it
    equals the Jaccard loss of the mispredicted set. Per image (``batch=False``, default; ``reduction="none"``
    gives ``(B, 1, 1, …)``) or over the batch flattened (``batch=True``: the reference code's default
    ``per_image=False``; ``(1,)``). Classes: ``classes="present"`` (default, like the reference code) averages
    over the scored classes present in the target (of that image); ``"all"`` over all scored classes. An
    image with no present class scores 0. Ignored voxels are removed before sorting. Binary tasks score the
    foreground channel only (``include_background`` otherwise picks the channels as elsewhere).

    Example:
        >>> import torch
        >>> probs = torch.tensor([[[[1.0, 1.0]], [[0.0, 0.0]]]])  # predicts class 0 everywhere
        >>> target = torch.tensor([[[[1, 0]]]])  # IoU: class 0 1/2, class 1 0/1
        >>> round(float(LovaszSoftmaxLoss(softmax=False, sigmoid=False)(probs, target)), 4)  # (0.5 + 1) / 2
        0.75
    """

    none_style = "image"
    ddp_statistics = "not pooled: `batch=True` sorts the rank's own voxels"

    def __init__(self, *, batch: bool = False, classes: str = "present", **kwargs) -> None:
        super().__init__(**kwargs)
        if classes not in CLASS_MODES:
            raise ValueError(f"classes must be one of {CLASS_MODES}, got {classes!r}")
        self.batch = batch
        self.classes = classes

    def per_item(self, p: Prepared) -> Tensor:
        ch = p.class_channels(self.include_background)
        z = p.probs[:, ch]
        g = p.onehot[:, ch]
        b, k = z.shape[:2]
        errors = (g - z).abs().reshape(b, k, -1)
        g = g.reshape(b, k, -1)
        if p.valid is None:
            valid = torch.ones_like(errors[:, :1], dtype=torch.bool)
        else:
            valid = p.valid.reshape(b, 1, -1)
        if self.batch:  # one image of all voxels
            errors = errors.transpose(0, 1).reshape(1, k, -1)
            g = g.transpose(0, 1).reshape(1, k, -1)
            valid = valid.transpose(0, 1).reshape(1, 1, -1)
        # ignored voxels: error 0 and sorted last, so they join no prefix that carries weight
        errors = torch.where(valid, errors, torch.zeros_like(errors))
        key = torch.where(valid, errors.detach(), torch.full_like(errors, -1.0))
        order = key.argsort(dim=-1, descending=True)
        errors_sorted = errors.gather(-1, order)
        gt_sorted = g.gather(-1, order)
        per_class = (errors_sorted * lovasz_jaccard_grad(gt_sorted)).sum(-1)  # (B or 1, K)
        if self.classes == "all":
            return per_class.mean(-1)
        present = (g.sum(-1) > 0).to(per_class)
        return (per_class * present).sum(-1) / present.sum(-1).clamp_min(1.0)

    def forward_prepared(self, p: Prepared) -> Tensor:
        return self.reduce_region(self.per_item(p), p, self.batch)


def lovasz_softmax_loss(logits: Tensor, target: Tensor, **kwargs) -> Tensor:
    """Functional form of :class:`LovaszSoftmaxLoss`."""
    return LovaszSoftmaxLoss(**kwargs)(logits, target)
