"""Overlap losses on soft counts: Dice, log-Dice, Generalized Dice (Sudre) and penalty GDL (Yang/Su).

Soft counts per image and class (or pooled over the batch with ``batch=True``), over the voxels that
count (ignored voxels are removed from every sum):
``TP_c = Σ_v z_{v,c} g_{v,c}``, ``FP_c = Σ_v z_{v,c}(1 − g_{v,c})``, ``FN_c = Σ_v (1 − z_{v,c}) g_{v,c}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from segbalance.monai_losses.arguments import check_number
from segbalance.monai_losses.base import SegLoss
from segbalance.monai_losses.distributed import all_gather_sum
from segbalance.monai_losses.inputs import Prepared
from segbalance.monai_losses.monai_dice import DiceLoss, GeneralizedDiceLoss  # noqa: F401  (MONAI's classes, re-exported)
from segbalance.monai_losses.registry import register

__all__ = [
    "DiceLoss", "GeneralizedDiceLoss",  # MONAI's classes, from .monai_dice
    "RegionStats",
    "region_stats",
    "soft_dice",
    "SoftDiceLoss",
    "LogDiceLoss",
    "SoftGeneralizedDiceLoss",
    "PenaltyGeneralizedDiceLoss",
    "dice_loss",
    "log_dice_loss",
    "generalized_dice_loss",
    "penalty_generalized_dice_loss",
]

ABSENT_WEIGHTS = ("max", "zero")


@dataclass
class RegionStats:
    """Soft counts ``(B, C')`` per image (or ``(C',)`` with ``batch=True``) over the scored channels."""

    tp: Tensor
    sum_pred: Tensor
    sum_gt: Tensor

    @property
    def fp(self) -> Tensor:
        return self.sum_pred - self.tp

    @property
    def fn(self) -> Tensor:
        return self.sum_gt - self.tp


def region_stats(
    p: Prepared, include_background: bool = True, batch: bool = False, squared_pred: bool = False
) -> RegionStats:
    """Soft ``TP``, ``Σ z`` and ``Σ g`` of the channels ``p.class_channels(include_background)``.

    ``squared_pred`` sums ``z²`` and ``g²`` instead of ``z`` and ``g`` (V-Net / MONAI ``squared_pred``).
    Ignored voxels are multiplied out of every sum. With ``batch=True`` the sums are all-gathered under DDP
    (nnU-Net's ``MemoryEfficientSoftDiceLoss(batch_dice=True, ddp=True)``): every rank scores the global
    batch.
    """
    ch = p.class_channels(include_background)
    z = p.probs[:, ch]
    g = p.onehot[:, ch]
    if p.valid is not None:
        z = z * p.valid_float
    dims = [0, *range(2, z.ndim)] if batch else list(range(2, z.ndim))
    tp = (z * g).sum(dims)
    sum_pred, sum_gt = ((z * z).sum(dims), (g * g).sum(dims)) if squared_pred else (z.sum(dims), g.sum(dims))
    if batch:
        tp, sum_pred, sum_gt = (all_gather_sum(t) for t in (tp, sum_pred, sum_gt))
    return RegionStats(tp, sum_pred, sum_gt)


def soft_dice(stats: RegionStats, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5) -> Tensor:
    """``(2 TP + smooth_nr) / (Σ z + Σ g + smooth_dr)`` per entry of ``stats``."""
    return (2.0 * stats.tp + smooth_nr) / (stats.sum_pred + stats.sum_gt + smooth_dr)


class _RegionLoss(SegLoss):
    """Shared flags of region losses: ``batch``, ``smooth_nr``, ``smooth_dr`` (MONAI's names and defaults)."""

    none_style = "dice"
    ddp_statistics = "soft TP/FP/FN sums (`batch=True`)"

    def __init__(
        self, *, batch: bool = False, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.batch = batch
        self.smooth_nr = check_number(type(self).__name__, "smooth_nr", smooth_nr, low=0)
        self.smooth_dr = check_number(type(self).__name__, "smooth_dr", smooth_dr, low=0)

    def stats(self, p: Prepared, squared_pred: bool = False) -> RegionStats:
        return region_stats(p, self.include_background, self.batch, squared_pred)


@register("dice")
class SoftDiceLoss(_RegionLoss):
    """Soft Dice loss ``L_c = 1 − (2 Σ z g + smooth_nr) / (Σ z + Σ g + smooth_dr)`` (Ma 2020, Eq. 8;
    Milletari).

    One value per image and class ``(B, C')`` (``batch=False``) or per class ``(C',)`` (``batch=True``:
    sums pooled over the batch), then ``reduction``; ``"none"`` gives MONAI ``DiceLoss``'s shape
    ``(B, C', 1, …)`` (``(C', 1, …)`` with ``batch=True``). ``squared_pred=True`` uses ``Σ z² + Σ g²`` in
    the denominator.

    Equal to MONAI ``DiceLoss(softmax=True, to_onehot_y=True, include_background=…, batch=…,
    squared_pred=…)`` with the same smoothing. nnU-Net's ``MemoryEfficientSoftDiceLoss(softmax, batch_dice,
    do_bg, smooth)`` returns ``−mean_c Dice_c`` with ``smooth_nr = smooth_dr = smooth`` (default 1), so
    ``SoftDiceLoss(smooth_nr=1, smooth_dr=1, …) = 1 + nnU-Net's value`` (it also clips the denominator at
    1e-8, which only matters for ``smooth = 0`` and empty classes). Binary tasks (``C == 1``) score the
    foreground only, like MONAI.

    Args:
        batch: pool the sums over the batch before the ratio (nnU-Net's ``batch_dice``).
        smooth_nr, smooth_dr: added to numerator / denominator (MONAI's 1e-5 defaults).
        squared_pred: square predictions and targets in the denominator.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.0]]]])  # (1, 2, 1, 2), a perfect prediction
        >>> target = torch.tensor([[[[1, 0]]]])
        >>> round(float(SoftDiceLoss(softmax=False, sigmoid=False)(probs, target)), 6)
        0.0
    """

    def __init__(self, *, squared_pred: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.squared_pred = squared_pred

    def per_class(self, p: Prepared) -> Tensor:
        """``1 − Dice`` per (image, class) or per class."""
        return 1.0 - soft_dice(self.stats(p, self.squared_pred), self.smooth_nr, self.smooth_dr)

    def forward_prepared(self, p: Prepared) -> Tensor:
        return self.reduce_region(self.per_class(p), p, self.batch)


@register("logdice")
class LogDiceLoss(SoftDiceLoss):
    """Log-Dice loss ``L_c = −ln Dice_c`` (Wong et al.'s ExpLog Dice term with γ = 1; Liu et al. 2021
    compares it).

    ``Dice_c`` is :class:`SoftDiceLoss`'s soft Dice with its flags; values per (image, class) then
    ``reduction``. Near-zero Dice gives large gradients: it keeps pushing small, poorly segmented classes.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[[[0.5, 0.5]], [[0.5, 0.5]]]])
        >>> target = torch.tensor([[[[1, 0]]]])
        >>> flags = dict(softmax=False, sigmoid=False, smooth_nr=0, smooth_dr=0)
        >>> round(float(LogDiceLoss(**flags)(probs, target)), 4)  # -ln 0.5
        0.6931
    """

    def per_class(self, p: Prepared) -> Tensor:
        dice = soft_dice(self.stats(p, self.squared_pred), self.smooth_nr, self.smooth_dr)
        return -torch.log(dice.clamp_min(torch.finfo(torch.float32).tiny))


def _gdl_weights(sum_gt: Tensor, absent_weight: str) -> Tensor:
    """``w_c = 1 / (Σ g_c)²`` with absent classes (infinite weight) set to 0 or the largest finite weight.

    The maximum is taken per image (``(B, C')`` input) or over the classes (``(C',)``), as MONAI does.
    """
    w = 1.0 / (sum_gt * sum_gt)
    infs = torch.isinf(w)
    w = torch.where(infs, torch.zeros_like(w), w)
    if absent_weight == "max":
        w = torch.where(infs, w.amax(dim=-1, keepdim=True).expand_as(w), w)
    return w.detach()


@register("gdl")
class SoftGeneralizedDiceLoss(_RegionLoss):
    """Generalized Dice loss (Sudre et al. 2017; Ma 2020, Eq. 11; Hossain et al.'s (2021) GDL baseline).

    ``L = 1 − (2 Σ_c w_c Σ_v z g + smooth_nr) / (Σ_c w_c Σ_v (z + g) + smooth_dr)``, ``w_c = 1/(Σ_v g_c)²``
    (weights are constants: no gradient flows through them). A class absent from the image (or batch) has
    an infinite weight: ``absent_weight="max"`` (default, MONAI's behaviour) replaces it with the largest
    finite weight, ``"zero"`` drops the class (its false positives then cost nothing).

    One value per image (``batch=False``) or one value (``batch=True``), then ``reduction``; ``"none"``
    gives MONAI's shape ``(B, 1, 1, …)`` (``(1, 1, …)`` with ``batch=True``). Equal to MONAI
    ``GeneralizedDiceLoss(softmax=True, to_onehot_y=True, w_type="square", include_background=…, batch=…)``
    with the same smoothing.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.0]]]])
        >>> target = torch.tensor([[[[1, 0]]]])
        >>> round(float(SoftGeneralizedDiceLoss(softmax=False, sigmoid=False)(probs, target)), 6)
        0.0
    """

    none_style = "gdl"

    def __init__(self, *, absent_weight: str = "max", **kwargs) -> None:
        super().__init__(**kwargs)
        if absent_weight not in ABSENT_WEIGHTS:
            raise ValueError(f"absent_weight must be one of {ABSENT_WEIGHTS}, got {absent_weight!r}")
        self.absent_weight = absent_weight

    def per_item(self, p: Prepared) -> Tensor:
        """``1 − GD`` per image ``(B,)`` or for the batch ``(1,)``."""
        s = self.stats(p)
        w = _gdl_weights(s.sum_gt, self.absent_weight)
        numer = 2.0 * (w * s.tp).sum(-1) + self.smooth_nr
        denom = (w * (s.sum_pred + s.sum_gt)).sum(-1) + self.smooth_dr
        return (1.0 - numer / denom).reshape(-1)

    def forward_prepared(self, p: Prepared) -> Tensor:
        return self.reduce_region(self.per_item(p), p, self.batch)


@register("pgdl")
class PenaltyGeneralizedDiceLoss(SoftGeneralizedDiceLoss):
    """Penalty GDL ``L = L_GD / (1 + k (1 − L_GD))`` (Su et al., MIDL 2019; Ma 2020, Eq. 14), k = 2.5.

    ``L_GD`` is :class:`SoftGeneralizedDiceLoss` per image (or batch); ``k = 0`` gives GDL back, larger ``k``
    weighs false positives and negatives more. Bounds: 0 at a perfect prediction, 1 at no overlap.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[[[0.5, 0.5]], [[0.5, 0.5]]]])
        >>> target = torch.tensor([[[[1, 0]]]])
        >>> flags = dict(softmax=False, sigmoid=False, smooth_nr=0, smooth_dr=0)
        >>> round(float(PenaltyGeneralizedDiceLoss(**flags)(probs, target)), 4)
        0.2222
    """

    def __init__(self, *, k: float = 2.5, **kwargs) -> None:
        super().__init__(**kwargs)
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        self.k = float(k)

    def per_item(self, p: Prepared) -> Tensor:
        gdl = super().per_item(p)
        return gdl / (1.0 + self.k * (1.0 - gdl))


def dice_loss(logits: Tensor, target: Tensor, **kwargs) -> Tensor:
    """Functional form of :class:`SoftDiceLoss`."""
    return SoftDiceLoss(**kwargs)(logits, target)


def log_dice_loss(logits: Tensor, target: Tensor, **kwargs) -> Tensor:
    """Functional form of :class:`LogDiceLoss`."""
    return LogDiceLoss(**kwargs)(logits, target)


def generalized_dice_loss(logits: Tensor, target: Tensor, **kwargs) -> Tensor:
    """Functional form of :class:`SoftGeneralizedDiceLoss`."""
    return SoftGeneralizedDiceLoss(**kwargs)(logits, target)


def penalty_generalized_dice_loss(logits: Tensor, target: Tensor, **kwargs) -> Tensor:
    """Functional form of :class:`PenaltyGeneralizedDiceLoss`."""
    return PenaltyGeneralizedDiceLoss(**kwargs)(logits, target)
