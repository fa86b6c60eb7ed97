"""Focal-type per-voxel losses of the Dual Focal Loss paper (000): Focal, Dual CE, Dual Focal.

Notation (000 §3): ``u`` logits, ``z = softmax(u)`` probabilities, ``y`` one-hot target, ``i`` the class,
``n`` the voxel. Each loss is summed over classes per voxel and averaged over the valid voxels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from segbalance.monai_losses.base import SegLoss
from segbalance.monai_losses.inputs import Prepared, reduce_voxels
from segbalance.monai_losses.registry import register

__all__ = [
    "FocalLoss",
    "DualCrossEntropyLoss",
    "DualFocalLoss",
    "focal_loss",
    "dual_cross_entropy",
    "dual_focal_loss",
    "log_one_minus_softmax",
]


def _class_vector(
    value: float | Sequence[float] | Tensor | None, num_classes: int, name: str
) -> Tensor | None:
    """``None``, a scalar (same for all classes) or a per-class sequence → ``(K,)`` float32 tensor."""
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(num_classes)
    if t.numel() != num_classes:
        raise ValueError(
            f"{name} must be a scalar or have one value per class ({num_classes}), got {t.numel()}"
        )
    if bool((t < 0).any()) or not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} values must be finite and non-negative, got {t.tolist()}")
    return t


def _per_class(t: Tensor, ref: Tensor) -> Tensor:
    return t.to(ref).view(1, -1, *([1] * (ref.ndim - 2)))


def log_one_minus_softmax(logits: Tensor, log_probs: Tensor | None = None) -> Tensor:
    """``log(1 − softmax(u)_i)`` for every class, exact and finite for saturated logits.

    For the arg-max class (the only one that can have ``z > 1/2``) it is ``logsumexp_{j≠i} u_j − logsumexp u``
    (no cancellation); for the others ``log1p(−exp(log z_i))`` with ``z_i ≤ 1/2`` is accurate. Both branches
    are kept finite so ``torch.where`` never back-propagates ``0·inf``. Needs ``C ≥ 2``.
    """
    if log_probs is None:
        log_probs = torch.log_softmax(logits, dim=1)
    is_max = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, logits.argmax(1, keepdim=True), True)
    lse_all = torch.logsumexp(logits, dim=1, keepdim=True)
    lse_rest = torch.logsumexp(logits.masked_fill(is_max, float("-inf")), dim=1, keepdim=True)
    safe_lp = torch.where(is_max, torch.full_like(log_probs, -1.0), log_probs).clamp_max(-math.log(2.0))
    return torch.where(is_max, (lse_rest - lse_all).expand_as(logits), torch.log1p(-torch.exp(safe_lp)))


@register("focal")
class FocalLoss(SegLoss):
    """Softmax focal loss ``L = −(1/N) Σ_n Σ_i α_i y_{i,n} (1 − z_{i,n})^γ log z_{i,n}``.

    000 Eq. 5 (Lin et al.); 004 Eq. 5. ``log z`` comes from ``log_softmax``. ``gamma=2`` (Lin et al.);
    ``alpha``: ``None`` (all 1), a scalar or one weight per class.

    Relation to MONAI: ``monai.losses.FocalLoss(use_softmax=True, to_onehot_y=True, gamma=γ, alpha=[α_i])``
    computes the same per-element terms but its ``reduction="mean"`` averages over ``B·C·voxels``
    elements, ours sums over the ``C`` classes and averages over voxels, so ours = ``C ×`` MONAI's.
    MONAI's scalar ``alpha`` means ``[1−α, α, …, α]``; ours means ``α`` for every class.

    Example:
        >>> import torch
        >>> loss = FocalLoss(gamma=0.0)  # γ = 0 is cross-entropy
        >>> round(float(loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long))), 4)
        0.6931
    """

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.alpha = alpha

    def forward_prepared(self, p: Prepared) -> Tensor:
        alpha = _class_vector(self.alpha, p.num_classes, "alpha")
        lp = p.log_probs
        terms = -p.onehot * (-torch.expm1(lp)).clamp_min(0).pow(self.gamma) * lp
        if alpha is not None:
            terms = terms * _per_class(alpha, terms)
        return reduce_voxels(terms.sum(1), p.valid, self.reduction)


@register("dce")
class DualCrossEntropyLoss(SegLoss):
    """Dual cross-entropy (Li et al.), 000 Eq. 4 exactly as printed (the paper's baseline):

    ``L_n = −Σ_i y_{i,n} log z_{i,n} + β Σ_i (1 − y_{i,n}) log(α + z_{i,n})``, mean over voxels.

    Defaults ``alpha = beta = 1`` (000 §4 sets every parameter to 1). Note the second term *decreases*
    when a negative class's probability falls (the paper's criticism of DCE), so the loss can be negative.

    Example:
        >>> import torch
        >>> loss = DualCrossEntropyLoss()
        >>> v = loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long))
        >>> round(float(v), 4)  # log 2 + log 1.5
        1.0986
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0 (log(alpha + z) with z -> 0), got {alpha}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.alpha = float(alpha)
        self.beta = float(beta)

    def forward_prepared(self, p: Prepared) -> Tensor:
        y = p.onehot
        terms = -y * p.log_probs + self.beta * (1 - y) * torch.log(self.alpha + p.probs)
        return reduce_voxels(terms.sum(1), p.valid, self.reduction)


@register("dfl")
class DualFocalLoss(SegLoss):
    """Dual Focal Loss, 000 Eq. 6–8 with the sign of Eq. 7 / Appendix B (DESIGN §3):

    ``L_n = −Σ_i y_{i,n} log z_{i,n} − β Σ_i (1 − y_{i,n}) log(ρ − z_{i,n}) + α Σ_i |y_{i,n} − z_{i,n}|^γ``

    summed over classes per voxel, averaged over valid voxels. Defaults ``alpha = beta = gamma = rho = 1``
    (000 §4). Eq. 8 as printed puts the ``α`` term under the minus sign, which would reward error; the
    paper's derivatives (Eq. 12, B.7/B.8) and the authors' code use ``+``. With ``ρ = 1``, ``log(1 − z)``
    is computed by :func:`log_one_minus_softmax` (finite for saturated logits, fp16 inputs included);
    ``ρ < 1`` is rejected. For ``γ < 1`` the gradient of ``|·|^γ`` at 0 is infinite: ``|y − z|`` is clamped
    at ``1e-12`` (zero gradient there) so no NaN appears.

    Example:
        >>> import torch
        >>> loss = DualFocalLoss()
        >>> v = loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long))
        >>> round(float(v), 4)  # log 2 + log 2 + 2 · 0.5
        2.3863
    """

    def __init__(
        self, alpha: float = 1.0, beta: float = 1.0, gamma: float = 1.0, rho: float = 1.0, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if rho < 1:
            raise ValueError(f"rho must be >= 1 (log(rho - z) with z -> 1), got {rho}")
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta, self.gamma, self.rho = float(alpha), float(beta), float(gamma), float(rho)

    def forward_prepared(self, p: Prepared) -> Tensor:
        y = p.onehot
        if p.activation != "softmax":
            raise ValueError("DualFocalLoss needs softmax activation (the paper's z = softmax(u))")
        if self.rho == 1.0:
            log_neg = log_one_minus_softmax(p.logits, p.log_probs)
        else:
            log_neg = torch.log(self.rho - p.probs)
        err = (y - p.probs).abs()
        if self.gamma < 1:
            err = err.clamp_min(1e-12)
        terms = -y * p.log_probs - self.beta * (1 - y) * log_neg + self.alpha * err.pow(self.gamma)
        return reduce_voxels(terms.sum(1), p.valid, self.reduction)


def focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0, alpha=None, **kwargs) -> Tensor:
    """Functional form of :class:`FocalLoss`."""
    return FocalLoss(gamma=gamma, alpha=alpha, **kwargs)(logits, target)


def dual_cross_entropy(
    logits: Tensor, target: Tensor, alpha: float = 1.0, beta: float = 1.0, **kwargs
) -> Tensor:
    """Functional form of :class:`DualCrossEntropyLoss`."""
    return DualCrossEntropyLoss(alpha=alpha, beta=beta, **kwargs)(logits, target)


def dual_focal_loss(
    logits: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    rho: float = 1.0,
    **kwargs,
) -> Tensor:
    """Functional form of :class:`DualFocalLoss`."""
    return DualFocalLoss(alpha=alpha, beta=beta, gamma=gamma, rho=rho, **kwargs)(logits, target)
