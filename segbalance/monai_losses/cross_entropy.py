"""Cross-entropy family: CE, weighted CE, TopK CE, class-balanced CE, OHEM.

All are per-voxel losses ``ℓ_v = −Σ_c w_c y_{v,c} log z_{v,c}`` averaged over the voxels that count;
they differ in the class weights ``w`` and in which voxels count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from segbalance.monai_losses.base import SegLoss
from segbalance.monai_losses.distributed import all_reduce_sum
from segbalance.monai_losses.inputs import Prepared, reduce_voxels
from segbalance.monai_losses.registry import register

__all__ = [
    "CrossEntropyLoss",
    "WeightedCrossEntropyLoss",
    "TopKCrossEntropyLoss",
    "ClassBalancedCrossEntropyLoss",
    "OHEMCrossEntropyLoss",
    "cross_entropy",
    "weighted_cross_entropy",
    "topk_cross_entropy",
    "class_balanced_cross_entropy",
    "ohem_cross_entropy",
    "voxel_cross_entropy",
    "voxel_ce_terms",
    "class_counts",
    "inverse_frequency_weights",
]


def _mask_weight(weight: Tensor | None, mask: Tensor | None) -> Tensor | None:
    """Class weights times the class mask of ``include_background`` (either may be ``None``)."""
    if mask is None:
        return weight
    return mask if weight is None else weight.to(mask) * mask


def voxel_ce_terms(p: Prepared, weight: Tensor | None = None) -> Tensor:
    """Per-class, per-voxel ``−w_c y_c log z_c`` as ``(B, K, *spatial)`` (soft targets allowed)."""
    terms = -(p.onehot * p.log_probs)
    if weight is not None:
        terms = terms * weight.to(terms).view(1, -1, *([1] * (terms.ndim - 2)))
    return terms


def voxel_cross_entropy(p: Prepared, weight: Tensor | None = None) -> Tensor:
    """Per-voxel ``−Σ_c w_c y_c log z_c`` as ``(B, *spatial)`` (soft targets allowed)."""
    return voxel_ce_terms(p, weight).sum(1)


class _VoxelLoss(SegLoss):
    """A per-voxel loss: ``include_background=False`` drops class 0's term from the class sum (the
    softmax stays over all channels), ``reduction="none"`` gives the per-class terms ``(B, C', *spatial)``."""

    background_scope = "class_sum"
    none_style = "voxel"


@register("ce")
class CrossEntropyLoss(_VoxelLoss):
    """Cross-entropy ``L = −(1/N) Σ_v Σ_c y_{v,c} log z_{v,c}`` (Hossain et al. 2021, Eq. 1; Ma 2020, Eq. 1).

    Softmax over channels for ``C > 1``, binary cross-entropy for ``C == 1`` (sigmoid). Equal to
    ``torch.nn.functional.cross_entropy`` with ``ignore_index`` (mean over non-ignored voxels).
    ``include_background=False`` drops class 0's term ``−y_0 log z_0`` (background voxels then cost 0 but
    still count in ``N``); ``reduction="none"`` gives the terms ``−y_c log z_c`` ``(B, C', *spatial)``.

    Example:
        >>> import torch
        >>> loss = CrossEntropyLoss()
        >>> logits = torch.zeros(1, 3, 4, 4)
        >>> target = torch.zeros(1, 1, 4, 4, dtype=torch.long)
        >>> round(float(loss(logits, target)), 4)  # log(3)
        1.0986
    """

    def forward_prepared(self, p: Prepared) -> Tensor:
        return self.reduce_terms(voxel_ce_terms(p, self.class_mask(p)), p)


def cross_entropy(logits: Tensor, target: Tensor, **kwargs) -> Tensor:
    """Functional form of :class:`CrossEntropyLoss`."""
    return CrossEntropyLoss(**kwargs)(logits, target)


def _class_weights(weight: Sequence[float] | Tensor, num_classes: int) -> Tensor:
    t = torch.as_tensor(weight, dtype=torch.float32).flatten()
    if t.numel() != num_classes:
        raise ValueError(f"weight must have one value per class ({num_classes}), got {t.numel()}")
    if bool((t < 0).any()) or not bool(torch.isfinite(t).all()):
        raise ValueError(f"weight values must be finite and non-negative, got {t.tolist()}")
    return t


def class_counts(p: Prepared) -> Tensor:
    """Voxel count per class ``(K,)`` over the batch's valid voxels, summed over DDP ranks (detached)."""
    with torch.no_grad():
        counts = p.onehot.sum(dim=[0, *range(2, p.onehot.ndim)])
    return all_reduce_sum(counts)


def inverse_frequency_weights(counts: Tensor) -> Tensor:
    """``w_c = N / (K⁺ · n_c)`` for the ``K⁺`` classes present (``n_c > 0``), 0 for absent classes.

    The "balanced" inverse-frequency weighting of the WCE baseline (Hossain et al. 2021, Eq. 3, ``w_i``
    inversely related to the pixel count of class ``i``): it is normalised so that ``Σ_c w_c n_c = N``, i.e.
    the weights average to 1 over the voxels and the loss keeps CE's scale. Absent classes have no voxels, so
    their weight does not enter the loss.
    """
    present = counts > 0
    n_present = present.sum().clamp_min(1)
    return torch.where(
        present, counts.sum() / (n_present * counts.clamp_min(1e-12)), torch.zeros_like(counts)
    )


@register("wce")
class WeightedCrossEntropyLoss(_VoxelLoss):
    """Weighted cross-entropy ``L = Σ_n w_{y_n} ℓ_n / Σ_n w_{y_n}``, ``ℓ_n = −log z_{y_n,n}``.

    Hossain et al. 2021, Eq. 3 (the WCE baseline); Ma 2020, Eq. 2.

    ``weight``: a sequence of class weights, or ``"inverse_frequency"`` (default): weights from the current
    batch's valid voxels by :func:`inverse_frequency_weights` (all-reduced under DDP). The ``mean``
    reduction is the weighted mean of ``torch.nn.functional.cross_entropy(weight=…)``; with
    inverse-frequency weights ``Σ_n w_{y_n} = N`` so it also equals the plain mean of ``w_{y_n} ℓ_n``.
    ``sum`` / ``none`` return ``Σ_n w ℓ`` / the terms ``w_c ℓ_c`` ``(B, C', *spatial)``.
    ``include_background=False`` drops class 0's term; the normaliser ``Σ_n w_{y_n}`` is unchanged.

    Example:
        >>> import torch
        >>> loss = WeightedCrossEntropyLoss(weight=[1.0, 3.0])
        >>> target = torch.tensor([[[[0, 1]]]])
        >>> logits = torch.zeros(1, 2, 1, 2)
        >>> round(float(loss(logits, target)), 4)  # log 2 whatever the weights when all ℓ are equal
        0.6931
    """

    ddp_statistics = "class counts (detached)"

    def __init__(self, weight: Sequence[float] | Tensor | str = "inverse_frequency", **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(weight, str) and weight != "inverse_frequency":
            raise ValueError(
                f"weight must be a sequence of class weights or 'inverse_frequency', got {weight!r}"
            )
        self.weight = weight

    def class_weights(self, p: Prepared) -> Tensor:
        if isinstance(self.weight, str):
            return inverse_frequency_weights(class_counts(p))
        return _class_weights(self.weight, p.num_classes)

    def forward_prepared(self, p: Prepared) -> Tensor:
        w = self.class_weights(p).to(p.logits)
        terms = voxel_ce_terms(p, _mask_weight(w, self.class_mask(p)))
        if self.reduction != "mean":
            return self.reduce_terms(terms, p)
        voxel_w = (p.onehot * w.view(1, -1, *([1] * (p.onehot.ndim - 2)))).sum(1)
        return terms.sum() / voxel_w.sum().clamp_min(1e-12)


def _valid_values(loss_map: Tensor, valid: Tensor | None) -> Tensor:
    return loss_map.reshape(-1) if valid is None else loss_map[valid]


@register("topk")
class TopKCrossEntropyLoss(_VoxelLoss):
    """TopK loss: mean CE over the hardest ``k`` % of the valid voxels (Ma 2020, Eq. 3; Wu et al.).

    ``k=10`` as nnU-Net's ``TopKLoss``; the ``⌊N·k/100⌋`` (at least 1) largest voxel CEs over the whole
    batch are averaged. Equals ``nnunetv2.training.loss.robust_ce_loss.TopKLoss(k=k)`` without ignore
    labels. With ``ignore_index`` nnU-Net keeps ignored voxels (loss 0) in ``N``; here ``N`` counts the
    valid voxels only, so ignored voxels never dilute the top k %. ``reduction`` ``sum`` sums the selected
    values, ``none`` returns them as a 1-D tensor (their mean is the ``mean`` loss).
    """

    none_style = "selected"

    def __init__(self, k: float = 10.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0 < k <= 100:
            raise ValueError(f"k must be a percentage in (0, 100], got {k}")
        self.k = float(k)

    def forward_prepared(self, p: Prepared) -> Tensor:
        loss_map = voxel_cross_entropy(p, self.class_mask(p))
        values = _valid_values(loss_map, p.valid)
        if values.numel() == 0:
            return values if self.reduction == "none" else reduce_voxels(loss_map, p.valid, self.reduction)
        n_keep = max(1, int(values.numel() * self.k / 100))
        top, _ = torch.topk(values, n_keep, sorted=False)
        if self.reduction == "none":
            return top
        return top.mean() if self.reduction == "mean" else top.sum()


@register("cb_ce")
class ClassBalancedCrossEntropyLoss(_VoxelLoss):
    """Class-balanced CE (Cui et al. 2019, effective number of samples; baseline of Tian et al. 2022, §4):

    ``w_c = (1 − β) / (1 − β^{n_c})`` normalised to ``Σ_c w_c = K`` over the classes present, and
    ``L = (1/N) Σ_n w_{y_n} ℓ_n`` (Cui et al.'s per-sample weighting, a plain mean). ``n_c`` are the valid
    voxel counts of the batch (all-reduced under DDP) or ``samples_per_class`` when given (e.g. dataset
    counts). ``beta=0.9999`` (Cui et al.'s default). Absent classes (``n_c = 0``) get weight 0.
    """

    ddp_statistics = "class counts (detached)"

    def __init__(
        self, beta: float = 0.9999, samples_per_class: Sequence[float] | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if not 0 <= beta < 1:
            raise ValueError(f"beta must lie in [0, 1), got {beta}")
        if samples_per_class is not None and any(float(n) < 0 for n in samples_per_class):
            raise ValueError("samples_per_class must be non-negative counts")
        self.beta = float(beta)
        self.samples_per_class = samples_per_class

    def class_weights(self, p: Prepared) -> Tensor:
        if self.samples_per_class is None:
            counts = class_counts(p).double()
        else:
            counts = _class_weights(self.samples_per_class, p.num_classes).double()
        present = counts > 0
        effective = -torch.expm1(counts * math.log(self.beta)) if self.beta > 0 else torch.ones_like(counts)
        w = torch.where(present, (1 - self.beta) / effective.clamp_min(1e-300), torch.zeros_like(counts))
        w = w / w.sum().clamp_min(1e-300) * p.num_classes
        return w.float()

    def forward_prepared(self, p: Prepared) -> Tensor:
        w = self.class_weights(p).to(p.logits)
        return self.reduce_terms(voxel_ce_terms(p, _mask_weight(w, self.class_mask(p))), p)


@register("ohem")
class OHEMCrossEntropyLoss(_VoxelLoss):
    """Online hard example mining CE (Shrivastava et al.; baseline of Tian et al. 2022, §4, "top 70 %
    samples").

    Default (``thresh=None``): mean CE over the ``⌈keep_ratio·N⌉`` hardest valid voxels,
    ``keep_ratio=0.7`` as in 002. Threshold variant (``thresh`` given, as in the common semantic-segmentation
    OHEM): keep voxels whose true-class probability is below ``max(thresh, q)``, with ``q`` the
    ``min_kept``-th smallest such probability, so at least ``min_kept`` voxels are kept (all of them when
    there are fewer valid voxels). ``none`` returns the kept voxels' CE values as a 1-D tensor.
    """

    none_style = "selected"

    def __init__(
        self, keep_ratio: float = 0.7, thresh: float | None = None, min_kept: int = 100_000, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if not 0 < keep_ratio <= 1:
            raise ValueError(f"keep_ratio must lie in (0, 1], got {keep_ratio}")
        if thresh is not None and not 0 < thresh <= 1:
            raise ValueError(f"thresh must lie in (0, 1], got {thresh}")
        if min_kept < 0:
            raise ValueError(f"min_kept must be >= 0, got {min_kept}")
        self.keep_ratio, self.thresh, self.min_kept = float(keep_ratio), thresh, int(min_kept)

    def keep_mask(self, p: Prepared, loss_map: Tensor) -> Tensor:
        valid = torch.ones_like(loss_map, dtype=torch.bool) if p.valid is None else p.valid
        n_valid = int(valid.sum())
        if n_valid == 0:
            return valid
        with torch.no_grad():
            if self.thresh is None:
                n_keep = min(n_valid, math.ceil(self.keep_ratio * n_valid))
                kth = torch.topk(loss_map[valid], n_keep, sorted=False).values.min()
                return valid & (loss_map >= kth)
            true_prob = torch.exp(-loss_map)  # z_{y} from the hard-label CE
            if self.min_kept >= n_valid:
                return valid
            threshold = self.thresh
            if self.min_kept > 0:
                q = torch.kthvalue(true_prob[valid], self.min_kept).values
                threshold = max(threshold, float(q))
            return valid & (true_prob <= threshold)

    def forward_prepared(self, p: Prepared) -> Tensor:
        loss_map = voxel_cross_entropy(p, self.class_mask(p))
        keep = self.keep_mask(p, loss_map)
        if self.reduction == "none":
            return loss_map[keep]
        return reduce_voxels(loss_map, keep, self.reduction)


def weighted_cross_entropy(logits: Tensor, target: Tensor, weight="inverse_frequency", **kwargs) -> Tensor:
    """Functional form of :class:`WeightedCrossEntropyLoss`."""
    return WeightedCrossEntropyLoss(weight=weight, **kwargs)(logits, target)


def topk_cross_entropy(logits: Tensor, target: Tensor, k: float = 10.0, **kwargs) -> Tensor:
    """Functional form of :class:`TopKCrossEntropyLoss`."""
    return TopKCrossEntropyLoss(k=k, **kwargs)(logits, target)


def class_balanced_cross_entropy(logits: Tensor, target: Tensor, beta: float = 0.9999, **kwargs) -> Tensor:
    """Functional form of :class:`ClassBalancedCrossEntropyLoss`."""
    return ClassBalancedCrossEntropyLoss(beta=beta, **kwargs)(logits, target)


def ohem_cross_entropy(logits: Tensor, target: Tensor, keep_ratio: float = 0.7, **kwargs) -> Tensor:
    """Functional form of :class:`OHEMCrossEntropyLoss`."""
    return OHEMCrossEntropyLoss(keep_ratio=keep_ratio, **kwargs)(logits, target)
