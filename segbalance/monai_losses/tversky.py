"""Tversky family: Tversky, focal Tversky (Abraham & Khan) and asymmetric similarity (Hashemi et al.).

All use the soft counts of :func:`segbalance.monai_losses.dice.region_stats` per (image, class), or per
class with ``batch=True``, with the weights named for what they weigh (``fp_weight``, ``fn_weight``).
"""

from __future__ import annotations

from torch import Tensor

from segbalance.monai_losses.arguments import check_number
from segbalance.monai_losses.dice import _RegionLoss
from segbalance.monai_losses.inputs import Prepared
from segbalance.monai_losses.monai_tversky import TverskyLoss  # noqa: F401  (MONAI's classes, re-exported)
from segbalance.monai_losses.registry import register

__all__ = [
    "TverskyLoss",  # MONAI's classes, from .monai_tversky
    "SoftTverskyLoss",
    "FocalTverskyLoss",
    "AsymmetricSimilarityLoss",
    "tversky_index",
    "tversky_loss",
    "focal_tversky_loss",
    "asymmetric_similarity_loss",
]


def tversky_index(
    tp: Tensor, fp: Tensor, fn: Tensor, fp_weight: float, fn_weight: float, smooth_nr: float, smooth_dr: float
) -> Tensor:
    """``TI = (TP + smooth_nr) / (TP + fp_weight·FP + fn_weight·FN + smooth_dr)`` (Ma 2020, Eq. 10)."""
    return (tp + smooth_nr) / (tp + fp_weight * fp + fn_weight * fn + smooth_dr)


@register("tversky")
class SoftTverskyLoss(_RegionLoss):
    """Tversky loss ``L_c = 1 − TI_c`` (Salehi et al. 2017; Ma 2020, Eq. 10), ``fp_weight=0.3,
    fn_weight=0.7``.

    ``TI_c = (TP_c + smooth_nr) / (TP_c + fp_weight·FP_c + fn_weight·FN_c + smooth_dr)``: a larger
    ``fn_weight`` punishes missed foreground more (recall over precision, good for small lesions).
    ``fp_weight = fn_weight = 0.5`` gives the Dice loss. Values per (image, class) ``(B, C')`` or per class
    ``(C',)`` with ``batch=True``, then ``reduction`` (``"none"`` keeps that shape, as MONAI ``TverskyLoss``).

    Equal to MONAI ``TverskyLoss(alpha=fp_weight, beta=fn_weight, softmax=True, to_onehot_y=True, …)``:
    MONAI's ``alpha`` weighs false positives and ``beta`` false negatives.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[[[0.5, 0.5]], [[0.5, 0.5]]]])  # (1, 2, 1, 2)
        >>> target = torch.tensor([[[[1, 1]]]])  # class 1 everywhere: TP=1, FN=1, FP=0
        >>> flags = dict(softmax=False, sigmoid=False, include_background=False, smooth_nr=0, smooth_dr=0)
        >>> round(float(SoftTverskyLoss(**flags)(probs, target)), 4)  # 1 - 1/(1 + 0.7)
        0.4118
    """

    none_style = "tversky"

    def __init__(self, *, fp_weight: float = 0.3, fn_weight: float = 0.7, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fp_weight = check_number(type(self).__name__, "fp_weight", fp_weight, low=0)
        self.fn_weight = check_number(type(self).__name__, "fn_weight", fn_weight, low=0)

    def index(self, p: Prepared) -> Tensor:
        """Tversky index per (image, class) or per class."""
        s = self.stats(p)
        return tversky_index(s.tp, s.fp, s.fn, self.fp_weight, self.fn_weight, self.smooth_nr, self.smooth_dr)

    def per_class(self, p: Prepared) -> Tensor:
        return 1.0 - self.index(p)

    def forward_prepared(self, p: Prepared) -> Tensor:
        return self.reduce_region(self.per_class(p), p, self.batch)


@register("focal_tversky")
class FocalTverskyLoss(SoftTverskyLoss):
    """Focal Tversky loss ``L_c = (1 − TI_c)^{1/γ}`` (Abraham & Khan 2019; Ma 2020, Eq. 12), γ = 4/3.

    The exponent is applied per class (then ``reduction`` over classes/images), as in Abraham & Khan's
    ``Σ_c (1 − TI_c)^{1/γ}``; γ in [1, 3], ``γ = 1`` gives :class:`SoftTverskyLoss`. With γ > 1 the exponent
    1/γ < 1 raises small losses, so well-segmented classes still contribute while poorly segmented ones
    dominate less than in Tversky. Defaults ``fp_weight=0.3, fn_weight=0.7, gamma=4/3`` as in the paper.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[[[0.5, 0.5]], [[0.5, 0.5]]]])
        >>> target = torch.tensor([[[[1, 1]]]])
        >>> flags = dict(softmax=False, sigmoid=False, include_background=False, smooth_nr=0, smooth_dr=0)
        >>> round(float(FocalTverskyLoss(**flags)(probs, target)), 4)  # (1 - 1/1.7) ** 0.75
        0.514
    """

    def __init__(self, *, gamma: float = 4.0 / 3.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.gamma = float(gamma)

    def per_class(self, p: Prepared) -> Tensor:
        # clamp: 1 − TI can be a hair below 0 from rounding, and x^{1/γ} has an infinite slope at 0
        return (1.0 - self.index(p)).clamp_min(1e-12) ** (1.0 / self.gamma)


@register("asym")
class AsymmetricSimilarityLoss(SoftTverskyLoss):
    """Asymmetric similarity loss ``L_c = 1 − F_β`` (Hashemi et al. 2019; Ma 2020, Eq. 13), β = 1.5.

    ``F_β = TP / (TP + β²/(1+β²)·FN + 1/(1+β²)·FP)``: a :class:`SoftTverskyLoss` with
    ``fn_weight = β²/(1+β²)`` and ``fp_weight = 1/(1+β²)`` (0.692 and 0.308 at β = 1.5), smoothing as in
    Tversky.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[[[0.5, 0.5]], [[0.5, 0.5]]]])
        >>> target = torch.tensor([[[[1, 1]]]])
        >>> flags = dict(softmax=False, sigmoid=False, include_background=False, smooth_nr=0, smooth_dr=0)
        >>> round(float(AsymmetricSimilarityLoss(**flags)(probs, target)), 4)  # 1 - 1/(1 + 2.25/3.25)
        0.4091
    """

    def __init__(self, *, beta: float = 1.5, **kwargs) -> None:
        if "fp_weight" in kwargs or "fn_weight" in kwargs:
            raise ValueError("asym sets fp_weight/fn_weight from beta; pass beta only (or use 'tversky')")
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        b2 = float(beta) ** 2
        super().__init__(fp_weight=1.0 / (1.0 + b2), fn_weight=b2 / (1.0 + b2), **kwargs)
        self.beta = float(beta)


def tversky_loss(logits: Tensor, target: Tensor, **kwargs) -> Tensor:
    """Functional form of :class:`SoftTverskyLoss`."""
    return SoftTverskyLoss(**kwargs)(logits, target)


def focal_tversky_loss(logits: Tensor, target: Tensor, **kwargs) -> Tensor:
    """Functional form of :class:`FocalTverskyLoss`."""
    return FocalTverskyLoss(**kwargs)(logits, target)


def asymmetric_similarity_loss(logits: Tensor, target: Tensor, **kwargs) -> Tensor:
    """Functional form of :class:`AsymmetricSimilarityLoss`."""
    return AsymmetricSimilarityLoss(**kwargs)(logits, target)
