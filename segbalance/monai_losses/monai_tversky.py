"""MONAI's ``TverskyLoss`` to the letter (see :mod:`.monai_common`); segbalance's form, with the weights
named for what they weigh (``fp_weight``, ``fn_weight``, the paper's 0.3/0.7), is the registry loss
``tversky`` (:class:`~.tversky.SoftTverskyLoss`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from segbalance.monai_losses.arguments import check_number
from segbalance.monai_losses.monai_common import (
    MonaiLoss,
    activate,
    check_activation,
    check_same_shape,
    check_tensors,
    count_axes,
    ignore_mask,
    labels_to_onehot,
    soft_counts,
    without_background,
)

__all__ = ["TverskyLoss"]


class TverskyLoss(MonaiLoss):
    """MONAI's ``TverskyLoss`` (Salehi et al. 2017):
    ``L_c = 1 − (TP + smooth_nr) / (TP + α·FP + β·FN + smooth_dr)`` per image and class (per class with
    ``batch=True``), ``alpha`` weighing false positives and ``beta`` false negatives (both 0.5: the Dice
    loss), then ``reduction`` (``"none"``: ``(B, C')``). Activation, target and ``ignore_index`` conventions
    as :class:`~.monai_dice.DiceLoss`.

    segbalance's form is ``get("tversky", fp_weight=…, fn_weight=…)`` (defaults 0.3/0.7, Salehi's).
    """

    segbalance_form = "tversky"

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        alpha: float = 0.5,
        beta: float = 0.5,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        soft_label: bool = False,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(reduction)
        owner = type(self).__name__
        check_activation(owner, sigmoid, softmax, other_act)
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.sigmoid = sigmoid
        self.softmax = softmax
        self.other_act = other_act
        self.alpha = check_number(owner, "alpha (the false-positive weight)", alpha)
        self.beta = check_number(owner, "beta (the false-negative weight)", beta)
        self.smooth_nr = check_number(owner, "smooth_nr", smooth_nr)
        self.smooth_dr = check_number(owner, "smooth_dr", smooth_dr)
        self.batch = batch
        self.soft_label = soft_label
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """``input`` ``(B, C, *spatial)``; ``target`` ``(B, C, …)`` or a label map ``(B, 1, …)``."""
        if not torch.jit.is_scripting():
            check_tensors("TverskyLoss", input, target)
        input = activate(input, self.sigmoid, self.softmax)
        if self.other_act is not None:
            input = self.other_act(input)
        original_target = target
        if self.to_onehot_y:
            target = labels_to_onehot(target, input.shape[1], self.ignore_index)
        mask = ignore_mask(original_target, self.ignore_index)
        if mask is not None:
            input, target = input * mask, target * mask
        input, target = without_background(input, target, self.include_background)
        check_same_shape("TverskyLoss", input, target)
        axes = count_axes(input.dim(), self.batch)
        tp, fp, fn = soft_counts(input, target, axes, 1, self.soft_label, False)
        score = 1.0 - (tp + self.smooth_nr) / (tp + self.alpha * fp + self.beta * fn + self.smooth_dr)
        if self.reduction == "sum":
            return torch.sum(score)
        if self.reduction == "none":
            return score
        return torch.mean(score)
