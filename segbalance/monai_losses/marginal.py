"""Label-marginal penalties (Liu et al. 2021): CE + λ·R(ŷ, p̂) with explicit control of the class proportions.

``p̂_k`` is the predicted proportion of class ``k`` in an image, the mean over its valid voxels of
``softmax(τ·u)`` with temperature ``τ = 10`` (Liu et al. 2021, Appendix C: logits multiplied by τ, which
sharpens the soft proportions towards the arg-max counts); ``ŷ_k`` is the ground-truth proportion of the same
voxels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from segbalance.monai_losses.base import SegLoss
from segbalance.monai_losses.cross_entropy import voxel_cross_entropy
from segbalance.monai_losses.distributed import all_gather_cat
from segbalance.monai_losses.inputs import Prepared, reduce_voxels
from segbalance.monai_losses.registry import register

__all__ = [
    "label_marginals",
    "marginal_l1",
    "marginal_kl",
    "dice_bias",
    "MarginalL1Loss",
    "MarginalKLLoss",
    "CEMarginalL1Loss",
    "CEMarginalKLLoss",
    "CEDiceBiasLoss",
]

_EPS = 1e-8


def label_marginals(p: Prepared, temperature: float = 10.0) -> tuple[Tensor, Tensor]:
    """``(ŷ, p̂)``, each ``(B, K)``: per-image class proportions of the target and of ``softmax(τ·u)``.

    Only valid voxels count; an image without valid voxels has all-zero proportions.
    """
    probs = torch.softmax(p.logits * temperature, dim=1) if p.activation == "softmax" else p.probs
    y = p.onehot
    dims = list(range(2, y.ndim))
    if p.valid is None:
        n = torch.full((y.shape[0], 1), float(y[0, 0].numel()), device=y.device)
    else:
        n = p.valid.flatten(1).sum(1, keepdim=True).float()
        probs = probs * p.valid_float
    n = n.clamp_min(1)
    return y.sum(dim=dims) / n, probs.sum(dim=dims) / n


def marginal_l1(y_hat: Tensor, p_hat: Tensor) -> Tensor:
    """``|ŷ − p̂|`` per (image, class) (Liu et al. 2021, Table 1, L1)."""
    return (y_hat - p_hat).abs()


def marginal_kl(y_hat: Tensor, p_hat: Tensor) -> Tensor:
    """``D_KL(ŷ‖p̂) = Σ_k ŷ_k log(ŷ_k / p̂_k)`` per image (Liu et al. 2021, Table 1), ``0·log 0 = 0``; ``(B,)``.

    ``p̂`` is clamped at 1e-8 so a class predicted nowhere gives a large finite penalty, not Inf.
    """
    log_ratio = torch.log(y_hat.clamp_min(_EPS)) - torch.log(p_hat.clamp_min(_EPS))
    return torch.where(y_hat > 0, y_hat * log_ratio, torch.zeros_like(y_hat)).sum(1)


def dice_bias(y_hat: Tensor, p_hat: Tensor) -> Tensor:
    """Label-marginal bias of log-Dice ``DB = Σ_k log(p̂_k + ŷ_k)`` per image (Liu et al. 2021, Eq. 1);
    ``(B,)``.

    By Proposition 1 (Liu et al. 2021) it is minimised over the simplex at the vertex of the largest ``ŷ_k``:
    it pushes towards extremely imbalanced predictions. Arguments clamped at 1e-8 (a class absent from
    both prediction and target would give ``log 0``).
    """
    return torch.log((p_hat + y_hat).clamp_min(_EPS)).sum(1)


def _check_positive(name: str, value: float) -> float:
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


class _MarginalBase(SegLoss):
    default_weight: float = 1.0
    background_scope = "unused"  # proportions live on the simplex of all classes
    none_style = "image"
    ddp_statistics = "per-image penalties of ŷ, p̂ (`mean`)"

    def __init__(self, temperature: float = 10.0, lambda_: float | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.temperature = _check_positive("temperature", temperature)
        self.lambda_ = self.default_weight if lambda_ is None else float(lambda_)
        if self.lambda_ < 0:
            raise ValueError(f"lambda_ must be >= 0, got {lambda_}")

    def penalty(self, p: Prepared) -> Tensor:
        raise NotImplementedError

    def per_image_penalty(self, p: Prepared) -> Tensor:
        """The label-marginal term per image, ``(B,)``."""
        raise NotImplementedError

    def forward_prepared(self, p: Prepared) -> Tensor:
        """``CE + λ·R``; ``mean``: CE over all valid voxels + λ·mean_B R; ``none``: per image ``(B, 1, 1, …)``
        (image CE + λ·R_b); ``sum``: the sum of the per-image values."""
        penalty = self.per_image_penalty(p)
        ce_map = voxel_cross_entropy(p)
        if self.reduction == "mean":  # the penalty's mean over the global batch under DDP
            return reduce_voxels(ce_map, p.valid, "mean") + self.lambda_ * all_gather_cat(penalty).mean()
        ce_img = torch.stack(
            [reduce_voxels(ce_map[i], _item(p.valid, i), "mean") for i in range(ce_map.shape[0])]
        )
        return self.reduce_region(ce_img + self.lambda_ * penalty, p)


def _item(valid: Tensor | None, i: int) -> Tensor | None:
    return None if valid is None else valid[i]


@register("marginal_l1")
class MarginalL1Loss(_MarginalBase):
    """Label-marginal L1 penalty alone: ``mean over (B, K) of |ŷ_k − p̂_k|`` (Liu et al. 2021, Eq. 5, Table 1).

    ``reduction="none"`` returns the ``(B, K, 1, …)`` values, ``sum`` their sum. ``lambda_`` is unused here.
    """

    none_style = "region"

    def penalty(self, p: Prepared) -> Tensor:
        return marginal_l1(*label_marginals(p, self.temperature))

    def forward_prepared(self, p: Prepared) -> Tensor:
        if self.reduction == "mean":
            return all_gather_cat(self.penalty(p)).mean()
        return self.reduce_region(self.penalty(p), p)


@register("marginal_kl")
class MarginalKLLoss(_MarginalBase):
    """Label-marginal KL penalty alone: ``D_KL(ŷ‖p̂)`` per image, mean over B (Liu et al. 2021, Eq. 5, Table
    1).

    ``reduction="none"`` returns the ``(B, 1, 1, …)`` values.
    """

    def penalty(self, p: Prepared) -> Tensor:
        return marginal_kl(*label_marginals(p, self.temperature))

    def forward_prepared(self, p: Prepared) -> Tensor:
        if self.reduction == "mean":
            return all_gather_cat(self.penalty(p)).mean()
        return self.reduce_region(self.penalty(p), p)


@register("ce_l1")
class CEMarginalL1Loss(_MarginalBase):
    """``CE + λ·mean_{B,K} |ŷ − p̂|`` (Liu et al. 2021, Eq. 5 with the L1 penalty), ``λ = 1`` (Liu et al.
    2021, §3 ablation, best value).

    ``reduction``: see :meth:`_MarginalBase.forward_prepared` (``none`` gives per-image values).
    """

    default_weight = 1.0

    def per_image_penalty(self, p: Prepared) -> Tensor:
        return marginal_l1(*label_marginals(p, self.temperature)).mean(1)


@register("ce_kl")
class CEMarginalKLLoss(_MarginalBase):
    """``CE + λ·mean_B D_KL(ŷ‖p̂)`` (Liu et al. 2021, Eq. 5 with the KL penalty), ``λ = 0.1`` (Liu et al.
    2021, ablation, best value)."""

    default_weight = 0.1

    def per_image_penalty(self, p: Prepared) -> Tensor:
        return marginal_kl(*label_marginals(p, self.temperature))


@register("ce_dicebias")
class CEDiceBiasLoss(_MarginalBase):
    """DiceBiasCE (Liu et al. 2021, Table 2): ``CE + λ·mean_{B,K} log(p̂_k + ŷ_k)``, the log-Dice bias term
    of Eq. 1.

    The bias term is averaged over images and classes (DESIGN §3, the same reduction as the L1 penalty);
    Eq. 1 sums it over the ``K`` classes, which only rescales λ by ``K``. Binary tasks (``C == 1``) use the
    foreground term alone, ``DB_1 = log(p̂_1 + ŷ_1)`` (Liu et al. 2021, Appendix B, Eq. 21). ``λ = 0.01``:
    Liu et al. 2021, §4 reports that DiceBiasCE matches DiceCE/LogDiceCE for small weights and "drops
    significantly" for ``λ ≥ 0.1``, so the default stays below that. The term is negative for small
    proportions (log of a number below 1), so the loss can go below CE.
    """

    default_weight = 0.01

    def per_image_penalty(self, p: Prepared) -> Tensor:
        y_hat, p_hat = label_marginals(p, self.temperature)
        if p.binary:
            y_hat, p_hat = y_hat[:, 1:], p_hat[:, 1:]
        return torch.log((p_hat + y_hat).clamp_min(_EPS)).mean(1)
