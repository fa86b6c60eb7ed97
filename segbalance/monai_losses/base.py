"""Base class holding MONAI's convention flags; every loss module derives from it."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from segbalance.monai_losses.arguments import ArgumentChecked, unknown_arguments_error
from segbalance.monai_losses.inputs import (
    REDUCTIONS,
    Prepared,
    float32_math,
    none_shape,
    prepare,
    reduce_classes,
    reduce_voxel_terms,
    reduce_voxels,
)

__all__ = ["SegLoss", "BACKGROUND_SCOPES"]

# what ``include_background=False`` does, per loss (``SegLoss.background_scope``; docs/losses.md's table)
BACKGROUND_SCOPES: dict[str, str] = {
    "channels": "drops channel 0 from the scored channels (MONAI's region losses)",
    "class_sum": "drops class 0's term from the per-voxel class sum; softmax still over all channels",
    "dice_term": "applies to the Dice term; CE stays over all classes (MONAI DiceCELoss)",
    "terms": "passed to every term",
    "boundary_term": "applies to the boundary term; the region term keeps its own default",
    "unused": "not applicable: the loss is over all classes; False warns",
}


class SegLoss(ArgumentChecked, nn.Module):
    """Common constructor arguments of all segbalance losses (MONAI's names).

    Args:
        include_background: score class 0. Region losses drop channel 0 from the scored channels, per-voxel
            losses drop class 0's term from the class sum (the softmax stays over all channels); each
            loss's ``background_scope`` (:data:`BACKGROUND_SCOPES`) says which. A flag a loss cannot honour
            warns, as MONAI does: ``False`` with a single-channel (binary) input for per-voxel losses.
        to_onehot_y: ``True`` target is a label map, ``False`` one-hot, ``None`` (default) decide by shape.
        softmax, sigmoid: activation applied inside; ``None`` picks softmax for ``C > 1``, sigmoid for
            ``C == 1``. Both ``False``: inputs are probabilities already.
        ignore_index: label value whose voxels are excluded (label-map targets only).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        check_finite: raise ``ValueError`` on NaN/Inf logits.

    An argument no constructor of the loss takes, or a surplus positional one, raises
    :class:`~.arguments.LossArgumentError` (a ``ValueError`` and a ``TypeError``) naming the loss class and
    listing its valid arguments.
    """

    registry_name: str = ""
    #: what ``include_background=False`` does (a key of :data:`BACKGROUND_SCOPES`)
    background_scope: str = "channels"
    #: the ``reduction="none"`` shape (a key of :data:`~.inputs.NONE_SHAPES`)
    none_style: str = "region"

    def __init__(
        self,
        *,
        include_background: bool = True,
        to_onehot_y: bool | None = None,
        softmax: bool | None = None,
        sigmoid: bool | None = None,
        ignore_index: int | None = None,
        reduction: str = "mean",
        check_finite: bool = True,
        **unknown,
    ) -> None:
        if unknown:
            raise unknown_arguments_error(type(self), unknown)
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__}: reduction must be one of {REDUCTIONS}, got {reduction!r}"
            )
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.softmax = softmax
        self.sigmoid = sigmoid
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.check_finite = check_finite
        if self.background_scope == "unused" and not include_background:
            warnings.warn(
                f"{type(self).__name__} is defined over all classes: include_background=False is ignored",
                stacklevel=3,
            )

    def prepare(self, logits: Tensor, target: Tensor) -> Prepared:
        """Validate and convert inputs with this module's flags (see :func:`~.inputs.prepare`)."""
        return prepare(
            logits,
            target,
            softmax=self.softmax,
            sigmoid=self.sigmoid,
            to_onehot_y=self.to_onehot_y,
            ignore_index=self.ignore_index,
            check_finite=self.check_finite,
        )

    def convention_kwargs(self) -> dict:
        """The convention flags as keyword arguments for the functional form."""
        return dict(
            softmax=self.softmax,
            sigmoid=self.sigmoid,
            to_onehot_y=self.to_onehot_y,
            ignore_index=self.ignore_index,
            check_finite=self.check_finite,
        )

    def class_mask(self, p: Prepared) -> Tensor | None:
        """``(K,)`` 0/1 weights of the classes in a per-voxel class sum: class 0 dropped when
        ``include_background=False``; ``None`` when every class counts. With a single-channel (binary)
        input the flag cannot apply: it warns and is ignored, as MONAI's ``FocalLoss``."""
        if self.include_background:
            return None
        if p.binary:
            warnings.warn("single channel prediction, `include_background=False` ignored.", stacklevel=3)
            return None
        mask = torch.ones(p.num_classes, dtype=p.logits.dtype, device=p.logits.device)
        mask[0] = 0.0
        return mask

    def reduce_terms(self, terms: Tensor, p: Prepared, valid: Tensor | None = None) -> Tensor:
        """``reduction`` of per-class, per-voxel terms ``(B, K, *spatial)`` (class 0 already masked out)."""
        channels = None if self.include_background else slice(1, None)
        return reduce_voxel_terms(terms, p, self.reduction, channels, valid)

    def reduce_region(self, values: Tensor, p: Prepared, batch: bool = False) -> Tensor:
        """``reduction`` of region values ``(B, C')``/``(C',)`` or per-image ``(B,)``; ``none`` in the
        shape of :attr:`none_style` (MONAI's for the losses MONAI has)."""
        if self.reduction != "none":
            return reduce_classes(values, self.reduction)
        return values.reshape(none_shape(self.none_style, values, p.logits.ndim - 2, batch))

    def mean_of_none(self, value: Tensor, p: Prepared) -> Tensor:
        """The ``reduction="mean"`` value recovered from this loss's ``reduction="none"`` output."""
        if self.none_style == "voxel":
            return reduce_voxels(value.sum(1), p.valid, "mean")
        return value.mean()

    def per_image(self, value: Tensor, p: Prepared) -> Tensor:
        """This loss's ``reduction="none"`` output as one value per image ``(B,)`` (the per-image mean of its
        items; per-voxel terms are summed over classes first). ``ValueError`` when it has no per-image
        values (``batch=True``, voxel-selecting losses)."""
        b = p.logits.shape[0]
        pooled = getattr(self, "batch", False) or self.none_style == "selected"
        if pooled or value.ndim == 0 or value.shape[0] != b:
            raise ValueError(
                f"{type(self).__name__} gives no per-image values (shape {tuple(value.shape)}): "
                "set batch=False, and use a loss that scores every voxel"
            )
        if self.none_style == "voxel":
            total = value.sum(1).reshape(b, -1)
            if p.valid is None:
                return total.mean(1)
            return total.sum(1) / p.valid.reshape(b, -1).sum(1).clamp_min(1)
        return value.reshape(b, -1).mean(1)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of raw ``logits`` ``(B, C, *spatial)`` against ``target`` (label map or one-hot)."""
        with float32_math(logits.device.type if isinstance(logits, Tensor) else "cpu"):
            return self.forward_prepared(self.prepare(logits, target))

    def forward_prepared(self, p: Prepared) -> Tensor:
        """The loss math on prepared float32 inputs; compound losses share one :class:`Prepared`."""
        raise NotImplementedError
