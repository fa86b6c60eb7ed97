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
    "multilabel_ce_terms",
    "multilabel_class_counts",
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


def _channel_view(t: Tensor, ref: Tensor) -> Tensor:
    """``(R,)`` per-channel values viewed to broadcast against ``(B, R, *spatial)``."""
    return t.to(ref).view(1, -1, *([1] * (ref.ndim - 2)))


def multilabel_ce_terms(p: Prepared, weight: Tensor | None = None) -> Tensor:
    """Per-channel binary cross-entropy with logits ``−[w₁ y log σ(x) + w₀ (1 − y) log(1 − σ(x))]``
    ``(B, R, *spatial)`` of a multi-label (per-channel sigmoid) input, from ``logsigmoid(±x)`` (stable).

    ``weight``: ``None`` or ``(R, 2)`` per-channel ``[w₀, w₁]`` (negative, positive) weights. Each channel is
    the two-class problem ``[1 − σ(x), σ(x)]``, the same as a binary ``C == 1`` task.
    """
    y = p.onehot
    log_pos, log_neg = torch.nn.functional.logsigmoid(p.logits), torch.nn.functional.logsigmoid(-p.logits)
    if weight is None:
        return -(y * log_pos + (1.0 - y) * log_neg)
    w = weight.to(p.logits)
    return -(_channel_view(w[:, 1], y) * y * log_pos + _channel_view(w[:, 0], y) * (1.0 - y) * log_neg)


def multilabel_class_counts(p: Prepared) -> Tensor:
    """``(R, 2)`` voxel counts ``[negatives, positives]`` per channel of a multi-label input, over the
    batch's valid voxels, summed over DDP ranks (detached)."""
    with torch.no_grad():
        dims = [0, *range(2, p.onehot.ndim)]
        pos = p.onehot.sum(dim=dims)
        n = p.onehot[:, 0].numel() if p.valid is None else p.valid.sum().to(pos)
        counts = torch.stack([n - pos, pos], dim=1)
    return all_reduce_sum(counts)


class _VoxelLoss(SegLoss):
    """A per-voxel loss: ``include_background=False`` drops class 0's term from the class sum (the
    softmax stays over all channels), ``reduction="none"`` gives the per-class terms ``(B, C', *spatial)``.

    Multi-label inputs (``sigmoid=True`` with ``C > 1``, nnU-Net's regions; :attr:`Prepared.multilabel`),
    for the losses that have that form: each channel is its own binary problem and its term is that
    channel's whole binary loss; ``mean`` averages over the valid voxels *and* the scored channels (as
    ``torch.nn.functional.binary_cross_entropy_with_logits`` and MONAI's ``FocalLoss(use_softmax=False)``),
    ``sum`` sums over both, ``none`` gives the terms ``(B, C', *spatial)``; ``include_background=False``
    drops channel 0 (as MONAI's sigmoid ``FocalLoss``)."""

    background_scope = "class_sum"
    none_style = "voxel"
    #: the loss has the multi-label form above (its ``forward_prepared`` branches on ``p.multilabel``);
    #: set by ``@register(..., multilabel=True)``, the one declaration
    multilabel_form = False

    def multilabel_channels(self) -> slice:
        """The channels a multi-label input scores: all, or ``1:`` with ``include_background=False``."""
        return slice(0, None) if self.include_background else slice(1, None)

    def reduce_multilabel(self, terms: Tensor, p: Prepared) -> Tensor:
        """``reduction`` of per-channel binary terms ``(B, R, *spatial)`` of a multi-label input."""
        terms = terms[:, self.multilabel_channels()]
        if self.reduction == "none":
            return terms if p.valid is None else torch.where(p.valid.unsqueeze(1), terms, terms.new_zeros(()))
        value = reduce_voxels(terms.sum(1), p.valid, self.reduction)
        return value / terms.shape[1] if self.reduction == "mean" else value

    def _channel_mean(self, p: Prepared) -> bool:
        return self.multilabel_form and p.multilabel and self.none_style == "voxel"

    def mean_of_none(self, value: Tensor, p: Prepared) -> Tensor:
        mean = super().mean_of_none(value, p)
        return mean / value.shape[1] if self._channel_mean(p) else mean

    def per_image(self, value: Tensor, p: Prepared) -> Tensor:
        out = super().per_image(value, p)
        return out / value.shape[1] if self._channel_mean(p) else out


@register("ce", multilabel=True)
class CrossEntropyLoss(_VoxelLoss):
    """Cross-entropy ``L = −(1/N) Σ_v Σ_c y_{v,c} log z_{v,c}`` (Hossain et al. 2021, Eq. 1; Ma 2020, Eq. 1).

    Softmax over channels for ``C > 1``, binary cross-entropy for ``C == 1`` (sigmoid). Equal to
    ``torch.nn.functional.cross_entropy`` with ``ignore_index`` (mean over non-ignored voxels).
    ``include_background=False`` drops class 0's term ``−y_0 log z_0`` (background voxels then cost 0 but
    still count in ``N``); ``reduction="none"`` gives the terms ``−y_c log z_c`` ``(B, C', *spatial)``.

    Multi-label (``sigmoid=True`` with ``C > 1``, nnU-Net's regions): per-channel binary cross-entropy with
    logits ``−[y log σ(x) + (1 − y) log(1 − σ(x))]`` from ``logsigmoid``, mean over valid voxels and
    channels: ``torch.nn.functional.binary_cross_entropy_with_logits`` (and nnU-Net's BCE term of
    ``DC_and_BCE_loss`` without ignore label; with one, nnU-Net divides the channel sum by the valid voxels
    only, ``C ×`` ours). Each channel equals the binary ``C == 1`` loss on it.

    Example:
        >>> import torch
        >>> loss = CrossEntropyLoss()
        >>> logits = torch.zeros(1, 3, 4, 4)
        >>> target = torch.zeros(1, 1, 4, 4, dtype=torch.long)
        >>> round(float(loss(logits, target)), 4)  # log(3)
        1.0986
    """

    def forward_prepared(self, p: Prepared) -> Tensor:
        if p.multilabel:
            return self.reduce_multilabel(multilabel_ce_terms(p), p)
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
    their weight does not enter the loss. ``counts`` may be ``(…, K)``: one set of weights per row (the
    per-channel ``[negatives, positives]`` of a multi-label input).
    """
    present = counts > 0
    n_present = present.sum(-1, keepdim=True).clamp_min(1)
    total = counts.sum(-1, keepdim=True)
    return torch.where(present, total / (n_present * counts.clamp_min(1e-12)), torch.zeros_like(counts))


@register("wce", multilabel=True)
class WeightedCrossEntropyLoss(_VoxelLoss):
    """Weighted cross-entropy ``L = Σ_n w_{y_n} ℓ_n / Σ_n w_{y_n}``, ``ℓ_n = −log z_{y_n,n}``.

    Hossain et al. 2021, Eq. 3 (the WCE baseline); Ma 2020, Eq. 2.

    ``weight``: a sequence of class weights, or ``"inverse_frequency"`` (default): weights from the current
    batch's valid voxels by :func:`inverse_frequency_weights` (all-reduced under DDP). The ``mean``
    reduction is the weighted mean of ``torch.nn.functional.cross_entropy(weight=…)``; with
    inverse-frequency weights ``Σ_n w_{y_n} = N`` so it also equals the plain mean of ``w_{y_n} ℓ_n``.
    ``sum`` / ``none`` return ``Σ_n w ℓ`` / the terms ``w_c ℓ_c`` ``(B, C', *spatial)``.
    ``include_background=False`` drops class 0's term; the normaliser ``Σ_n w_{y_n}`` is unchanged.

    Multi-label (``sigmoid=True`` with ``C > 1``): ``C`` independent binary problems, each the binary
    ``C == 1`` loss of its channel (weights ``[negative, positive]``: from the channel's counts, or the two
    given values for every channel), averaged over the channels.

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
        """``(K,)`` class weights; multi-label: ``(R, 2)`` per-channel ``[negative, positive]`` weights."""
        if p.multilabel:
            if isinstance(self.weight, str):
                return inverse_frequency_weights(multilabel_class_counts(p))
            t = torch.as_tensor(self.weight, dtype=torch.float32).flatten()
            if t.numel() != 2:
                raise ValueError(
                    "weight of a multi-label (per-channel sigmoid) input must be two values [negative, "
                    f"positive], used for every channel, got {t.numel()}"
                )
            return _class_weights(t, 2).expand(p.num_classes, 2)
        if isinstance(self.weight, str):
            return inverse_frequency_weights(class_counts(p))
        return _class_weights(self.weight, p.num_classes)

    def _forward_multilabel(self, p: Prepared) -> Tensor:
        # R independent binary WCE problems: per channel Σ_n w ℓ / Σ_n w, then the mean over channels
        w = self.class_weights(p).to(p.logits)
        terms = multilabel_ce_terms(p, w)
        if self.reduction != "mean":
            return self.reduce_multilabel(terms, p)
        y = p.onehot
        voxel_w = _channel_view(w[:, 1], y) * y + _channel_view(w[:, 0], y) * (1.0 - y)
        if p.valid is not None:
            terms, voxel_w = terms * p.valid_float, voxel_w * p.valid_float
        dims = [0, *range(2, y.ndim)]
        per_channel = terms.sum(dims) / voxel_w.sum(dims).clamp_min(1e-12)
        return per_channel[self.multilabel_channels()].mean()

    def forward_prepared(self, p: Prepared) -> Tensor:
        if p.multilabel:
            return self._forward_multilabel(p)
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
