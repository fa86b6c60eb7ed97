"""MONAI's ``FocalLoss`` to the letter (see :mod:`.monai_common`); segbalance's softmax focal loss of the
papers (summed over classes) is the registry loss ``focal`` (:class:`~.focal.SoftmaxFocalLoss`)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from segbalance.monai_losses.arguments import LossArgumentError, check_number
from segbalance.monai_losses.monai_common import (
    LossShapeError,
    MonaiLoss,
    check_tensors,
    ignore_mask,
    labels_to_onehot,
    without_background,
)
from segbalance.monai_losses.monai_dice import _as_weight

__all__ = ["FocalLoss", "softmax_focal_terms", "sigmoid_focal_terms"]


def _alpha_vector(alpha: Tensor, num_classes: int) -> Tensor:
    if alpha.shape[0] != num_classes:
        raise LossArgumentError(
            f"FocalLoss: alpha has {alpha.shape[0]} values but the loss scores {num_classes} classes "
            "(with include_background=False the background class 0 has none)"
        )
    return alpha


def softmax_focal_terms(input: Tensor, target: Tensor, gamma: float, alpha: Tensor | None) -> Tensor:
    """``−a_c (1 − z_c)^γ y_c log z_c`` per class and voxel, ``z = softmax(input)``; a scalar ``alpha`` ``a``
    means ``[1 − a, a, …, a]``, a vector one weight per class."""
    log_z = input.log_softmax(1)
    loss = -(1 - log_z.exp()).pow(gamma) * log_z * target
    if alpha is not None:
        if alpha.dim() == 0:
            a = float(alpha.item())
            factor = torch.tensor([1 - a] + [a] * (target.shape[1] - 1)).to(loss)
        else:
            factor = _alpha_vector(alpha, target.shape[1]).to(loss)
        loss = factor.view([-1] + [1] * (target.dim() - 2)) * loss
    return loss


def sigmoid_focal_terms(input: Tensor, target: Tensor, gamma: float, alpha: Tensor | None) -> Tensor:
    """Lin et al.'s binary focal loss per channel and voxel, ``p = sigmoid(input)``:
    ``BCE(x, y) · exp(γ · log(1 − p_t))`` with ``log(1 − p_t) = logsigmoid(−x (2y − 1))``; a scalar ``alpha``
    weighs positives by ``a`` and negatives by ``1 − a``, a vector weighs each class's positives."""
    loss = input - input * target - F.logsigmoid(input)
    loss = (F.logsigmoid(-input * (target * 2 - 1)) * gamma).exp() * loss
    if alpha is not None:
        a = alpha.to(device=input.device, dtype=input.dtype)
        if a.dim() == 0:
            factor = target * a + (1 - target) * (1 - a)
        else:
            a = _alpha_vector(a, target.shape[1]).view([-1] + [1] * (target.dim() - 2))
            factor = torch.where(target == 1, a, torch.ones_like(a))
        loss = factor * loss
    return loss


class FocalLoss(MonaiLoss):
    """MONAI's ``FocalLoss`` (Lin et al. 2017): per class and voxel the sigmoid focal term (default) or, with
    ``use_softmax=True``, ``−α_c (1 − z_c)^γ y_c log z_c`` (:func:`softmax_focal_terms`); ``weight`` per
    class; then ``reduction``: ``"mean"`` over **all** elements (batch, classes, voxels: MONAI's value, the
    papers' class sum divided by C), ``"sum"`` the sum over batch and classes of the voxel means, ``"none"``
    the terms ``(B, C', *spatial)``. ``input`` must be logits; the target is one-hot unless ``to_onehot_y``.

    The papers' form (the focal term summed over classes, mean over voxels: ``C ×`` this value; label maps;
    multi-label sigmoid) is the registry loss ``get("focal")`` (:class:`~.focal.SoftmaxFocalLoss`).
    """

    segbalance_form = "focal"

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        weight: Sequence[float] | float | int | Tensor | None = None,
        reduction: str = "mean",
        use_softmax: bool = False,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(reduction)
        owner = type(self).__name__
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.gamma = check_number(owner, "gamma", gamma)
        self.alpha: Tensor | None = None if alpha is None else _as_alpha(alpha)
        self.scalar_alpha = self.alpha is not None and self.alpha.dim() == 0
        self.register_buffer("class_weight", None if weight is None else _as_weight(owner, weight))
        self.class_weight: Tensor | None
        self.use_softmax = use_softmax
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """``input`` ``(B, C, *spatial)`` logits; ``target`` ``(B, C, …)`` or a label map ``(B, 1, …)``."""
        if not torch.jit.is_scripting():
            check_tensors("FocalLoss", input, target)
        original_target = target
        if self.to_onehot_y:
            target = labels_to_onehot(target, input.shape[1], self.ignore_index)
        input, target = without_background(input, target, self.include_background)
        mask = ignore_mask(original_target, self.ignore_index)
        if target.shape != input.shape:
            raise LossShapeError(
                f"FocalLoss: ground truth has different shape ({list(target.shape)}) from input "
                f"({list(input.shape)}); a label map needs to_onehot_y=True"
            )
        if mask is not None:
            input, target = input * mask, target * mask
        input, target = input.float(), target.float()
        alpha: Optional[Tensor] = self.alpha  # noqa: UP045  (TorchScript reads this annotation)
        if self.use_softmax:
            if not self.include_background and self.scalar_alpha:
                alpha = None
                warnings.warn(
                    "`include_background=False`, scalar `alpha` ignored when using softmax.", stacklevel=2
                )
            loss = softmax_focal_terms(input, target, self.gamma, alpha)
        else:
            loss = sigmoid_focal_terms(input, target, self.gamma, alpha)
        if mask is not None:
            loss = loss * mask
        loss = self.weighted(loss)
        axes = list(range(2, target.dim()))
        if self.reduction == "sum":
            if mask is not None:
                voxels = mask.sum(dim=axes, keepdim=True).clamp(min=_eps(mask.dtype))
                return (loss.sum(dim=axes, keepdim=True) / voxels).sum()
            return loss.mean(dim=axes).sum()
        if self.reduction == "mean":
            if mask is not None:
                return loss.sum() / mask.sum().clamp(min=_eps(mask.dtype))
            return loss.mean()
        return loss

    def weighted(self, loss: Tensor) -> Tensor:
        """``loss`` times the class weights (a scalar, or one per channel of ``loss``)."""
        weight = self.class_weight
        if weight is None:
            return loss
        w = weight.to(device=loss.device, dtype=loss.dtype)
        num_classes = loss.shape[1]
        if w.dim() > 0:
            if num_classes == 1:
                raise LossArgumentError("FocalLoss: a per-class weight needs more than one output channel")
            if w.numel() != num_classes:
                raise LossArgumentError(
                    f"FocalLoss: weight has {w.numel()} values but the loss scores {num_classes} channels"
                )
        if bool((w < 0).any()):
            raise LossArgumentError("FocalLoss: weight values must be >= 0")
        if w.dim() == 0:
            return loss * w
        return loss * w.view([1, num_classes] + [1] * (loss.dim() - 2))


def _eps(dtype: torch.dtype) -> float:
    """``torch.finfo(dtype).eps`` (which TorchScript cannot call) for the float dtypes."""
    if dtype == torch.float64:
        return 2.220446049250313e-16
    if dtype == torch.float16:
        return 0.0009765625
    if dtype == torch.bfloat16:
        return 0.0078125
    return 1.1920928955078125e-07


def _as_alpha(alpha) -> Tensor:
    """A scalar or per-class ``alpha`` as a float tensor; :class:`LossArgumentError` for anything else."""
    if isinstance(alpha, (bool, str)):
        raise LossArgumentError(f"FocalLoss: alpha must be a number or one number per class, got {alpha!r}")
    if isinstance(alpha, (int, float)):
        return torch.tensor(check_number("FocalLoss", "alpha", alpha))
    return _as_weight("FocalLoss", alpha).float()
