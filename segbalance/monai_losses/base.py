"""Base class holding MONAI's convention flags; every loss module derives from it."""

from __future__ import annotations

from torch import Tensor, nn

from segbalance.monai_losses.inputs import REDUCTIONS, Prepared, float32_math, prepare

__all__ = ["SegLoss"]


class SegLoss(nn.Module):
    """Common constructor arguments of all segbalance losses (MONAI's names).

    Args:
        include_background: score class 0 (region losses; per-voxel losses document their use).
        to_onehot_y: ``True`` target is a label map, ``False`` one-hot, ``None`` (default) decide by shape.
        softmax, sigmoid: activation applied inside; ``None`` picks softmax for ``C > 1``, sigmoid for
            ``C == 1``. Both ``False``: inputs are probabilities already.
        ignore_index: label value whose voxels are excluded (label-map targets only).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        check_finite: raise ``ValueError`` on NaN/Inf logits.
    """

    registry_name: str = ""

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
    ) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.softmax = softmax
        self.sigmoid = sigmoid
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.check_finite = check_finite

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

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of raw ``logits`` ``(B, C, *spatial)`` against ``target`` (label map or one-hot)."""
        with float32_math(logits.device.type if isinstance(logits, Tensor) else "cpu"):
            return self.forward_prepared(self.prepare(logits, target))

    def forward_prepared(self, p: Prepared) -> Tensor:
        """The loss math on prepared float32 inputs; compound losses share one :class:`Prepared`."""
        raise NotImplementedError
