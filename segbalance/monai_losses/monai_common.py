"""What segbalance's MONAI-named loss classes share: MONAI's argument checks, activation, one-hot targets,
ignore masks, soft counts and reductions, as small TorchScript-compatible functions.

The classes ``DiceLoss``, ``GeneralizedDiceLoss``, ``DiceCELoss``, ``FocalLoss``, ``TverskyLoss`` and
``HausdorffDTLoss`` behave as MONAI's classes of those names (MONAI 1.6): the same constructor parameters in
the same order, ``forward(input, target)``, the same values, shapes, warnings and errors, any number of
spatial dimensions. Unlike segbalance's registry losses they apply no activation unless asked
(``sigmoid``/``softmax``/``other_act``), read the target as one-hot unless ``to_onehot_y=True`` and do not
upcast under autocast: exactly what a MONAI user's code expects. Errors are MONAI's types, raised as
classes that are also ``ValueError`` (:class:`LossShapeError` is an ``AssertionError`` too, as MONAI raises
for mismatched shapes), and name the loss.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.nn.modules.loss import _Loss

from segbalance.monai_losses.arguments import ArgumentChecked, LossArgumentError

__all__ = [
    "MonaiLoss",
    "LossShapeError",
    "LossInputError",
    "NotScriptableError",
    "check_reduction",
    "check_activation",
    "activate",
    "labels_to_onehot",
    "ignore_mask",
    "without_background",
    "check_same_shape",
    "soft_counts",
    "reduce_per_class",
]

REDUCTIONS = ("mean", "sum", "none")


class LossShapeError(ValueError, AssertionError):
    """Input and target shapes do not fit: MONAI raises ``AssertionError`` here, segbalance ``ValueError``."""


class LossInputError(ValueError, RuntimeError):
    """An input the loss cannot score (labels out of range, not a tensor); MONAI fails with a
    ``RuntimeError`` from inside torch there."""


class NotScriptableError(RuntimeError):
    """``torch.jit.script`` of a loss that cannot be scripted (MONAI's raises ``RuntimeError`` too)."""


def check_reduction(owner: str, reduction, allowed: tuple[str, ...] = REDUCTIONS) -> str:
    """``reduction`` (a string or MONAI's ``LossReduction``) as a string; :class:`LossArgumentError`
    naming ``owner`` and the allowed values otherwise."""
    value = getattr(reduction, "value", reduction)
    if not isinstance(value, str) or value not in allowed:
        raise LossArgumentError(f"{owner}: reduction must be one of {allowed}, got {reduction!r}")
    return value


def check_activation(owner: str, sigmoid: bool, softmax: bool, other_act) -> None:
    """MONAI's rule: at most one of ``sigmoid``, ``softmax``, ``other_act``; ``other_act`` callable."""
    if other_act is not None and not callable(other_act):
        raise LossArgumentError(
            f"{owner}: other_act must be None or callable (e.g. torch.tanh), got {type(other_act).__name__}"
        )
    if int(bool(sigmoid)) + int(bool(softmax)) + int(other_act is not None) > 1:
        raise LossArgumentError(
            f"{owner}: sigmoid, softmax and other_act are exclusive; set at most one, got sigmoid={sigmoid}, "
            f"softmax={softmax}, other_act={other_act!r}"
        )


class MonaiLoss(ArgumentChecked, _Loss):
    """Base of the MONAI-named classes: ``reduction`` checked against the loss's allowed values; a wrong
    constructor call raises :class:`LossArgumentError` naming the class, listing its arguments and the
    registry name of segbalance's own form (:attr:`segbalance_form`)."""

    #: the registry name of segbalance's form of this loss (named in the error for an unknown argument)
    segbalance_form: str = ""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.segbalance_form:
            cls.unknown_argument_hint = (
                f" (segbalance's own form with its extra arguments: get({cls.segbalance_form!r}))"
            )

    def __init__(self, reduction, allowed: tuple[str, ...] = REDUCTIONS) -> None:
        super().__init__(reduction=check_reduction(type(self).__name__, reduction, allowed))


@torch.jit.unused
def check_tensors(owner: str, input, target) -> None:
    """Eager-only: ``input`` and ``target`` are tensors with a batch and a channel axis."""
    for name, value in (("input", input), ("target", target)):
        if not isinstance(value, Tensor):
            raise LossInputError(f"{owner}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if input.dim() < 2:
        raise LossShapeError(f"{owner}: input must have shape (B, C, *spatial), got {tuple(input.shape)}")


def activate(input: Tensor, sigmoid: bool, softmax: bool) -> Tensor:
    """MONAI's activation: sigmoid, or softmax over channels (one channel: warns and leaves it)."""
    if sigmoid:
        input = torch.sigmoid(input)
    if softmax:
        if input.shape[1] == 1:
            warnings.warn("single channel prediction, `softmax=True` ignored.", stacklevel=3)
        else:
            input = torch.softmax(input, 1)
    return input


def labels_to_onehot(target: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """A label map ``(B, 1, *spatial)`` as one-hot ``(B, num_classes, *spatial)`` (MONAI's ``to_onehot_y``);
    one channel: warns and returns ``target``. An ``ignore_index`` outside ``[0, num_classes)`` is mapped to
    class 0 first (its voxels are masked out later), as MONAI does."""
    if num_classes == 1:
        warnings.warn("single channel prediction, `to_onehot_y=True` ignored.", stacklevel=3)
        return target
    if ignore_index is not None and (ignore_index < 0 or ignore_index >= num_classes):
        target = torch.where(target == ignore_index, torch.zeros_like(target), target)
    if target.dim() < 2 or target.shape[1] != 1:
        raise LossShapeError(
            f"to_onehot_y=True needs a label map target (B, 1, *spatial), got shape {list(target.shape)}"
        )
    if not torch.jit.is_scripting():
        check_label_range(target, num_classes)
    shape = list(target.shape)
    shape[1] = num_classes
    return torch.zeros(shape, dtype=torch.float, device=target.device).scatter_(1, target.long(), 1.0)


@torch.jit.unused
def check_label_range(target: Tensor, num_classes: int) -> None:
    """Eager-only: label values in ``[0, num_classes)`` (torch's scatter would fail obscurely)."""
    if target.numel():
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= num_classes:
            raise LossInputError(
                f"target labels must lie in [0, {num_classes - 1}] for {num_classes} input channels, "
                f"found values in [{lo}, {hi}]"
            )


def ignore_mask(target: Tensor, ignore_index: int | None) -> Tensor | None:
    """``(B, 1, *spatial)`` float mask, 0 where the voxel is ignored (MONAI's ``create_ignore_mask``): a label
    map is compared with ``ignore_index``; for one-hot targets a class index masks its voxels, any other value
    masks the voxels with no class."""
    if ignore_index is None:
        return None
    if target.shape[1] == 1:
        return (target != ignore_index).float()
    if 0 <= ignore_index < target.shape[1]:
        return 1.0 - target[:, ignore_index : ignore_index + 1]
    return (target.sum(dim=1, keepdim=True) > 0).float()


def without_background(input: Tensor, target: Tensor, include_background: bool) -> tuple[Tensor, Tensor]:
    """Drop channel 0 of both when ``include_background=False`` (one channel: warns and keeps it)."""
    if include_background:
        return input, target
    if input.shape[1] == 1:
        warnings.warn("single channel prediction, `include_background=False` ignored.", stacklevel=3)
        return input, target
    return input[:, 1:], target[:, 1:]


def check_same_shape(owner: str, input: Tensor, target: Tensor) -> None:
    """:class:`LossShapeError` (``AssertionError`` and ``ValueError``) unless the shapes are equal."""
    if target.shape != input.shape:
        raise LossShapeError(
            f"{owner}: ground truth has different shape ({list(target.shape)}) from input "
            f"({list(input.shape)}); a label map needs to_onehot_y=True"
        )


def soft_counts(
    input: Tensor, target: Tensor, axes: list[int], ord: int, soft_label: bool, decoupled: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft ``TP, FP, FN`` summed over ``axes`` (MONAI's ``compute_tp_fp_fn``).

    ``ord == 1`` without ``soft_label``: ``TP = Σ p g``, ``FP = Σ p − TP``, ``FN = Σ g − TP`` (``decoupled``,
    Dice) or ``FP = Σ p (1 − g)``, ``FN = Σ (1 − p) g`` (Tversky). Otherwise the soft-label form of Wang et
    al. (2023): ``TP = (‖p‖ + ‖g‖ − ‖p − g‖) / 2`` with ``ord``-norms raised to ``ord``, ``FP = ‖p‖ − TP``,
    ``FN = ‖g‖ − TP``; equal to the first for 0/1 targets.
    """
    if ord == 1 and not soft_label:
        tp = torch.sum(input * target, dim=axes)
        if decoupled:
            return tp, torch.sum(input, dim=axes) - tp, torch.sum(target, dim=axes) - tp
        return tp, torch.sum(input * (1 - target), dim=axes), torch.sum((1 - input) * target, dim=axes)
    pred = torch.linalg.vector_norm(input, ord=ord, dim=axes)
    truth = torch.linalg.vector_norm(target, ord=ord, dim=axes)
    diff = torch.linalg.vector_norm(input - target, ord=ord, dim=axes)
    if ord > 1:
        pred, truth, diff = torch.pow(pred, ord), torch.pow(truth, ord), torch.pow(diff, ord)
    tp = (pred + truth - diff) / 2
    return tp, pred - tp, truth - tp


def count_axes(ndim: int, batch: bool) -> list[int]:
    """The axes the soft counts sum over: the spatial ones, and the batch with ``batch=True``."""
    axes = list(range(2, ndim))
    return [0] + axes if batch else axes


def reduce_per_class(f: Tensor, reduction: str, ndim: int) -> Tensor:
    """``mean``/``sum`` of per-(image, class) values; ``none`` as ``(B, C, 1, …)`` (``ndim`` of the input),
    MONAI's broadcastable shape (``(C, 1, …)`` for per-class values)."""
    if reduction == "mean":
        return torch.mean(f)
    if reduction == "sum":
        return torch.sum(f)
    shape = list(f.shape[0:2]) + [1] * (ndim - 2)
    return f.view(shape)


def class_weight_vector(owner: str, weight: Tensor, num_classes: int) -> Tensor:
    """A scalar or per-class ``weight`` as ``(num_classes,)``; MONAI's ``ValueError`` when its length or
    sign is wrong (raised at the call, where MONAI raises)."""
    if weight.dim() == 0:
        weight = weight.expand(num_classes)
    elif weight.shape[0] != num_classes:
        raise LossArgumentError(
            f"{owner}: weight has {weight.shape[0]} values but the loss scores {num_classes} classes "
            "(with include_background=False the background class 0 has no weight)"
        )
    if bool(weight.min() < 0):
        raise LossArgumentError(f"{owner}: weight values must be >= 0")
    return weight
