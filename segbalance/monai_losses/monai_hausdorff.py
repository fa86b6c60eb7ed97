"""MONAI's ``HausdorffDTLoss`` to the letter (see :mod:`.monai_common`), on segbalance's exact distance
transforms (the same fields, computed on the input's device); segbalance's form (softmax/sigmoid applied
itself, label maps, ignore index, precomputed target maps) is the registry loss ``hd_dt``
(:class:`~.hausdorff.HausdorffDistanceLoss`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from segbalance.monai_losses.arguments import LossArgumentError, check_number
from segbalance.monai_losses.distance import METHODS, normalize_spacing, unsigned_distance_map
from segbalance.monai_losses.monai_common import (
    LossShapeError,
    MonaiLoss,
    NotScriptableError,
    activate,
    check_activation,
    check_same_shape,
    check_tensors,
    labels_to_onehot,
    reduce_per_class,
    without_background,
)

__all__ = ["HausdorffDTLoss"]


class HausdorffDTLoss(MonaiLoss):
    """MONAI's ``HausdorffDTLoss`` (Karimi & Salcudean 2019):
    ``L = mean_v (p_v − g_v)² (d_P(v)^α + d_G(v)^α)`` per image and channel (per channel over the batch with
    ``batch=True``), ``d`` the distance of every voxel to the other side of the mask ``> 0.5`` of the
    prediction and of the target (0 for an empty or full mask), computed without gradient; then
    ``reduction`` (``"none"``: ``(B, C', 1, …)``). Inputs with 2 or 3 spatial dimensions, as MONAI.
    Activation and target conventions as :class:`~.monai_dice.DiceLoss` (no ``ignore_index``: MONAI has
    none here).

    Extras after MONAI's arguments (keywords only): ``spacing`` (voxel size per spatial axis, or one
    number; distances in its units, default 1 as MONAI) and ``distance_method`` (the exact transform's
    implementation, :func:`~.distance.euclidean_distance_transform`).

    Not scriptable: the distance transform runs outside TorchScript (MONAI's ``HausdorffDTLoss`` does not
    script either); ``torch.jit.script`` raises :class:`~.monai_common.NotScriptableError` saying so.
    """

    segbalance_form = "hd_dt"

    def __init__(
        self,
        alpha: float = 2.0,
        include_background: bool = False,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        reduction: str = "mean",
        batch: bool = False,
        *,
        spacing: float | Sequence[float] | None = None,
        distance_method: str = "auto",
    ) -> None:
        super().__init__(reduction)
        owner = type(self).__name__
        check_activation(owner, sigmoid, softmax, other_act)
        if distance_method not in METHODS:
            raise LossArgumentError(
                f"{owner}: distance_method must be one of {METHODS}, got {distance_method!r}"
            )
        self.alpha = check_number(owner, "alpha", alpha)
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.sigmoid = sigmoid
        self.softmax = softmax
        self.other_act = other_act
        self.batch = batch
        self.spacing = spacing
        self.distance_method = distance_method

    def __prepare_scriptable__(self):
        raise NotScriptableError(
            "HausdorffDTLoss cannot be scripted with torch.jit.script: its distance transform runs outside "
            "TorchScript (as MONAI's HausdorffDTLoss); use it eagerly or with torch.compile"
        )

    @torch.no_grad()
    def distance_field(self, img: Tensor) -> Tensor:
        """Distance of every voxel to the other side of ``img > 0.5``, per image and channel (``(B, C, …)``);
        0 for items with an empty or full mask."""
        nd = img.dim() - 2
        spacing = None if self.spacing is None else normalize_spacing(self.spacing, nd)
        return unsigned_distance_map(img > 0.5, spacing, method=self.distance_method).to(img.dtype)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """``input`` ``(B, C, H, W[, D])``; ``target`` ``(B, C, …)`` or a label map ``(B, 1, …)``."""
        check_tensors("HausdorffDTLoss", input, target)
        if input.dim() not in (4, 5):
            raise LossShapeError(
                "HausdorffDTLoss: input must be 2D (B, C, H, W) or 3D (B, C, H, W, D), got "
                f"{tuple(input.shape)}"
            )
        input = activate(input, self.sigmoid, self.softmax)
        if self.other_act is not None:
            input = self.other_act(input)
        if self.to_onehot_y:
            target = labels_to_onehot(target, input.shape[1])
        input, target = without_background(input, target, self.include_background)
        check_same_shape("HausdorffDTLoss", input, target)
        distance = self.distance_field(input.detach()).float() ** self.alpha
        distance = distance + self.distance_field(target.detach()).float() ** self.alpha
        f = (input - target) ** 2 * distance.to(input.device)
        axes = [0, *range(2, input.dim())] if self.batch else list(range(2, input.dim()))
        f = f.mean(dim=axes, keepdim=True)
        if self.reduction == "none":
            return f.view(list(f.shape[0:2]) + [1] * (input.dim() - 2))
        return reduce_per_class(f, self.reduction, input.dim())
