"""MONAI's ``DiceLoss``, ``GeneralizedDiceLoss`` and ``DiceCELoss``, to the letter (see :mod:`.monai_common`).

segbalance's own forms (auto-activation, label maps, its ignore handling, float32 under autocast) are the
registry losses ``dice`` (:class:`~.dice.SoftDiceLoss`), ``gdl`` (:class:`~.dice.SoftGeneralizedDiceLoss`)
and ``dice_ce`` (:class:`~.compound.DiceCrossEntropyLoss`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from segbalance.monai_losses.arguments import LossArgumentError, check_number
from segbalance.monai_losses.monai_common import (
    LossShapeError,
    MonaiLoss,
    activate,
    check_activation,
    check_same_shape,
    check_tensors,
    class_weight_vector,
    count_axes,
    ignore_mask,
    labels_to_onehot,
    reduce_per_class,
    soft_counts,
    without_background,
)

__all__ = ["DiceLoss", "GeneralizedDiceLoss", "DiceCELoss", "W_TYPES"]

W_TYPES = ("square", "simple", "uniform")
ABSENT_WEIGHTS = ("max", "zero")


class DiceLoss(MonaiLoss):
    """MONAI's ``DiceLoss``: ``L = 1 − (2 TP + smooth_nr) / (2 TP + FP + FN + smooth_dr)`` per image and
    class (per class with ``batch=True``), Jaccard ``1 − (TP + smooth_nr) / (TP + FP + FN + smooth_dr)``
    with ``jaccard=True`` (both written as MONAI writes them: ``FP``, ``FN`` halved for Dice), soft counts of
    :func:`~.monai_common.soft_counts`; then ``weight`` per class and ``reduction`` (``"none"``:
    ``(B, C', 1, …)``).

    ``input`` is used as given unless ``sigmoid``, ``softmax`` or ``other_act`` is set; the target is one-hot
    ``(B, C, …)`` unless ``to_onehot_y=True`` (label map ``(B, 1, …)``). ``ignore_index``: voxels with that
    label (or, one-hot, of that class) count nowhere. Every parameter has MONAI's name, position, default
    and meaning (Milletari et al. 2016; Wang et al. 2023 for ``soft_label``).

    segbalance's form, which applies softmax/sigmoid itself and reads label maps, is ``get("dice")``.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.0]]]])  # (1, 2, 1, 2), a perfect prediction
        >>> onehot = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.0]]]])
        >>> round(float(DiceLoss()(probs, onehot)), 6)
        0.0
    """

    segbalance_form = "dice"

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        weight: Sequence[float] | float | int | Tensor | None = None,
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
        self.squared_pred = squared_pred
        self.jaccard = jaccard
        self.smooth_nr = check_number(owner, "smooth_nr", smooth_nr)
        self.smooth_dr = check_number(owner, "smooth_dr", smooth_dr)
        self.batch = batch
        self.register_buffer("class_weight", None if weight is None else _as_weight(owner, weight))
        self.class_weight: Tensor | None
        self.soft_label = soft_label
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """``input`` ``(B, C, *spatial)``; ``target`` ``(B, C, …)`` or a label map ``(B, 1, …)``."""
        if not torch.jit.is_scripting():
            check_tensors("DiceLoss", input, target)
        input = activate(input, self.sigmoid, self.softmax)
        if self.other_act is not None:
            input = self.other_act(input)
        original_target = target
        if self.to_onehot_y:
            target = labels_to_onehot(target, input.shape[1], self.ignore_index)
        input, target = without_background(input, target, self.include_background)
        mask = ignore_mask(original_target, self.ignore_index)
        check_same_shape("DiceLoss", input, target)
        if mask is not None:
            input, target = input * mask, target * mask
        ord = 2 if self.squared_pred else 1
        tp, fp, fn = soft_counts(input, target, count_axes(input.dim(), self.batch), ord, self.soft_label)
        if not self.jaccard:
            fp = fp * 0.5
            fn = fn * 0.5
        f = 1 - (2 * tp + self.smooth_nr) / (2 * (tp + fp + fn) + self.smooth_dr)
        weight = self.class_weight
        if weight is not None and target.shape[1] != 1:
            f = f * class_weight_vector("DiceLoss", weight, target.shape[1]).to(f)
        return reduce_per_class(f, self.reduction, input.dim())


def _as_weight(owner: str, weight) -> Tensor:
    """A class weight as a tensor (a number or one per class); :class:`LossArgumentError` otherwise."""
    try:
        t = torch.as_tensor(weight)
    except (TypeError, ValueError, RuntimeError):
        raise LossArgumentError(
            f"{owner}: weight must be a number or a sequence of numbers (one per class), got {weight!r}"
        ) from None
    if t.dim() > 1 or t.is_complex() or t.dtype == torch.bool:
        raise LossArgumentError(f"{owner}: weight must be a number or one number per class, got {weight!r}")
    return t


class GeneralizedDiceLoss(MonaiLoss):
    """MONAI's ``GeneralizedDiceLoss`` (Sudre et al. 2017):
    ``L = 1 − (2 Σ_c w_c TP_c + smooth_nr) / (Σ_c w_c (2 TP_c + FP_c + FN_c) + smooth_dr)`` per image (for the
    batch with ``batch=True``), ``w_c = 1/(Σ g_c)²`` (``w_type="square"``), ``1/Σ g_c`` (``"simple"``) or 1
    (``"uniform"``); a class absent from the image gets the image's largest finite weight. ``reduction``
    ``"none"`` gives ``(B, 1, 1, …)``. Activation and target conventions as :class:`DiceLoss`.

    Extras after MONAI's arguments (keywords only): ``ignore_index`` (as :class:`DiceLoss`'s) and
    ``absent_weight`` (``"max"``, MONAI's rule, or ``"zero"``: absent classes weigh nothing).
    segbalance's form is ``get("gdl")``.
    """

    segbalance_form = "gdl"

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        w_type: str = "square",
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        soft_label: bool = False,
        *,
        ignore_index: int | None = None,
        absent_weight: str = "max",
    ) -> None:
        super().__init__(reduction)
        owner = type(self).__name__
        check_activation(owner, sigmoid, softmax, other_act)
        w_type = getattr(w_type, "value", w_type)
        if w_type not in W_TYPES:
            raise LossArgumentError(f"{owner}: w_type must be one of {W_TYPES}, got {w_type!r}")
        if absent_weight not in ABSENT_WEIGHTS:
            raise LossArgumentError(
                f"{owner}: absent_weight must be one of {ABSENT_WEIGHTS}, got {absent_weight!r}"
            )
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.sigmoid = sigmoid
        self.softmax = softmax
        self.other_act = other_act
        self.w_type = str(w_type)
        self.smooth_nr = check_number(owner, "smooth_nr", smooth_nr)
        self.smooth_dr = check_number(owner, "smooth_dr", smooth_dr)
        self.batch = batch
        self.soft_label = soft_label
        self.ignore_index = ignore_index
        self.absent_weight = absent_weight

    def class_weights(self, truth: Tensor) -> Tensor:
        """``w_c`` of the target volumes ``truth`` (``(B, C')``, or ``(C',)`` with ``batch``), absent classes
        set by ``absent_weight``."""
        if self.w_type == "simple":
            w = torch.reciprocal(truth)
        elif self.w_type == "square":
            w = torch.reciprocal(truth * truth)
        else:
            w = torch.ones_like(truth)
        infs = torch.isinf(w)
        w = torch.where(infs, torch.zeros_like(w), w)
        if self.absent_weight == "zero":
            return w
        largest = torch.max(w) if self.batch else torch.max(w, dim=1)[0].unsqueeze(dim=1)
        return w + infs * largest

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """``input`` ``(B, C, *spatial)``; ``target`` ``(B, C, …)`` or a label map ``(B, 1, …)``."""
        if not torch.jit.is_scripting():
            check_tensors("GeneralizedDiceLoss", input, target)
        input = activate(input, self.sigmoid, self.softmax)
        if self.other_act is not None:
            input = self.other_act(input)
        original_target = target
        if self.to_onehot_y:
            target = labels_to_onehot(target, input.shape[1], self.ignore_index)
        input, target = without_background(input, target, self.include_background)
        mask = ignore_mask(original_target, self.ignore_index)
        check_same_shape("GeneralizedDiceLoss", input, target)
        if mask is not None:
            input, target = input * mask, target * mask
        axes = count_axes(input.dim(), self.batch)
        tp, fp, fn = soft_counts(input, target, axes, 1, self.soft_label)
        w = self.class_weights(torch.sum(target, axes).float())
        dim = 0 if self.batch else 1
        numer = 2.0 * (tp * w).sum(dim, keepdim=True) + self.smooth_nr
        denom = (2 * (tp + 0.5 * fp + 0.5 * fn) * w).sum(dim, keepdim=True) + self.smooth_dr
        return reduce_per_class(1.0 - numer / denom, self.reduction, input.dim())


class DiceCELoss(MonaiLoss):
    """MONAI's ``DiceCELoss``: ``lambda_dice · DiceLoss + lambda_ce · CE``, the Dice term a
    :class:`DiceLoss` with the flags given, CE ``torch.nn.CrossEntropyLoss`` on the raw ``input`` (weights
    ``weight``, ``label_smoothing``), or ``BCEWithLogitsLoss`` (``pos_weight=weight``) for one channel.
    ``reduction`` is ``"mean"`` or ``"sum"`` (MONAI has no ``"none"`` here); ``weight`` applies to both
    terms (without its background entry for Dice when ``include_background=False``).

    segbalance's form (``"none"`` per image, label maps, ignore index) is ``get("dice_ce")``.
    """

    segbalance_form = "dice_ce"

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        weight: Tensor | None = None,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(reduction, ("mean", "sum"))
        owner = type(self).__name__
        if weight is not None:
            weight = _as_weight(owner, weight)
        self.dice = DiceLoss(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            squared_pred=squared_pred,
            jaccard=jaccard,
            reduction=self.reduction,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            weight=weight[1:] if weight is not None and not include_background else weight,
        )
        smoothing = check_number(owner, "label_smoothing", label_smoothing, low=0, high=1)
        self.cross_entropy = nn.CrossEntropyLoss(
            weight=weight, reduction=self.reduction, label_smoothing=smoothing
        )
        self.binary_cross_entropy = nn.BCEWithLogitsLoss(pos_weight=weight, reduction=self.reduction)
        self.lambda_dice = check_number(owner, "lambda_dice", lambda_dice, low=0)
        self.lambda_ce = check_number(owner, "lambda_ce", lambda_ce, low=0)

    def ce(self, input: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy of the logits ``input``: a label map loses its channel axis, a one-hot target is
        taken as class probabilities."""
        if input.shape[1] != target.shape[1] and target.shape[1] == 1:
            target = torch.squeeze(target, dim=1).long()
        elif not torch.is_floating_point(target):
            target = target.to(dtype=input.dtype)
        return self.cross_entropy(input, target)

    def bce(self, input: Tensor, target: Tensor) -> Tensor:
        """Binary cross-entropy with logits for a one-channel ``input``."""
        if not torch.is_floating_point(target):
            target = target.to(dtype=input.dtype)
        return self.binary_cross_entropy(input, target)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """``input`` ``(B, C, *spatial)`` logits; ``target`` ``(B, C, …)`` or a label map ``(B, 1, …)``."""
        if input.dim() != target.dim():
            raise LossShapeError(
                f"DiceCELoss: input and target need the same number of dimensions, got {list(input.shape)} "
                f"and {list(target.shape)}; a label map target has shape (B, 1, *spatial)"
            )
        if target.shape[1] != 1 and target.shape[1] != input.shape[1]:
            raise LossShapeError(
                "DiceCELoss: target needs 1 channel (label map) or as many as input, got "
                f"{list(target.shape)} "
                f"for input {list(input.shape)}"
            )
        dice = self.dice(input, target)
        ce = self.ce(input, target) if input.shape[1] != 1 else self.bce(input, target)
        return self.lambda_dice * dice + self.lambda_ce * ce
