"""Recall loss (Tian et al. 2022): cross-entropy re-weighted by each class's current false-negative rate."""

from __future__ import annotations

import torch
from torch import Tensor

from segbalance.monai_losses.cross_entropy import (
    _mask_weight,
    _VoxelLoss,
    multilabel_ce_terms,
    voxel_ce_terms,
)
from segbalance.monai_losses.distributed import all_reduce_sum
from segbalance.monai_losses.inputs import Prepared
from segbalance.monai_losses.registry import register

__all__ = ["RecallLoss", "recall_loss", "recall_counts"]


def _multilabel_recall_counts(p: Prepared) -> tuple[Tensor, Tensor]:
    # per channel the binary problem's two classes [negative, positive], prediction σ(x) > 0.5 (x > 0)
    y = p.onehot  # zero at ignored voxels
    pred = (p.logits > 0).to(y)
    neg = 1.0 - y if p.valid is None else (1.0 - y) * p.valid_float
    dims = [0, *range(2, y.ndim)]
    tp = torch.stack([(neg * (1.0 - pred)).sum(dims), (y * pred).sum(dims)], dim=1)
    fn = torch.stack([(neg * pred).sum(dims), (y * (1.0 - pred)).sum(dims)], dim=1)
    return tp, fn


def recall_counts(p: Prepared) -> tuple[Tensor, Tensor]:
    """``(TP_c, FN_c)`` per class over the valid voxels (arg-max prediction), detached, all-reduced.

    Multi-label inputs: ``(R, 2)`` counts per channel for its classes ``[negative, positive]``, from the
    prediction ``σ(x) > 0.5`` (the negative class's TP/FN are the channel's TN/FP).
    """
    if p.multilabel:
        with torch.no_grad():
            tp, fn = _multilabel_recall_counts(p)
        return all_reduce_sum(tp), all_reduce_sum(fn)
    with torch.no_grad():
        k = p.num_classes
        pred = p.logits.argmax(1)
        y = p.onehot  # zero at ignored voxels
        dims = [0, *range(2, y.ndim)]
        gt = y.sum(dim=dims)
        pred_onehot = torch.nn.functional.one_hot(pred, k).movedim(-1, 1).to(y)
        tp = (y * pred_onehot).sum(dim=dims)
        fn = gt - tp
    return all_reduce_sum(tp), all_reduce_sum(fn)


@register("recall", multilabel=True)
class RecallLoss(_VoxelLoss):
    """Recall loss, Tian et al. 2022, Eq. 5: ``L = −(1/N) Σ_n w_{y_n} log z_{y_n,n}``, ``w_c = FN_c / (FN_c +
    TP_c)``.

    ``w_c = 1 − recall_c``.

    ``TP_c``/``FN_c`` are counted from the arg-max prediction of the current batch over the valid voxels,
    pooled over the batch (and summed over DDP ranks, so every rank uses the same weights) and detached:
    the weights are constants for back-propagation, as in Tian et al. 2022, Eq. 7–8. ``N`` counts the valid
    voxels.

    Options: ``ema`` (``None`` default): momentum ``m`` of exponential moving averages of the counts,
    ``TP ← m·TP + (1−m)·TP_batch`` (same for FN), kept in buffers that ``state_dict()`` carries (a
    reloaded loss gives the same next value), updated in training mode only; ``eps`` guards the division.
    Classes absent from the batch (``TP + FN = 0``) get weight 0: no voxel of theirs enters the loss, so
    the value is irrelevant without ``ema``; with ``ema`` their averaged counts are used. A batch that is
    predicted perfectly has all weights 0 and loss 0 (the paper's definition; pair it with CE if needed).

    Multi-label (``sigmoid=True`` with ``C > 1``, nnU-Net's regions): each channel is the binary ``C == 1``
    recall loss on it, ``−[w₁ y log σ + w₀ (1 − y) log(1 − σ)]`` with ``w₁ = FN/(FN + TP)`` of the
    channel's positives and ``w₀ = FP/(FP + TN)`` of its negatives, counted from ``σ(x) > 0.5`` over the
    batch; mean over valid voxels and channels. The EMA buffers then hold ``(R, 2)`` counts.

    Example:
        >>> import torch
        >>> loss = RecallLoss()
        >>> logits = torch.tensor([[[[2.0, 2.0]], [[0.0, 0.0]]]])  # predicts class 0 everywhere
        >>> target = torch.tensor([[[[0, 1]]]])
        >>> # w_0 = 0 (recall 1), w_1 = 1 (recall 0): loss = (0 + CE at voxel 2) / 2
        >>> round(float(loss(logits, target)), 4)
        1.0635
    """

    ddp_statistics = "TP/FN counts (detached)"

    def __init__(self, ema: float | None = None, eps: float = 1e-7, **kwargs) -> None:
        super().__init__(**kwargs)
        if ema is not None and not 0 <= ema < 1:
            raise ValueError(f"ema must be None or a momentum in [0, 1), got {ema}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.ema = ema
        self.eps = float(eps)
        # persistent: ``loss.state_dict()`` carries the averaged counts into checkpoints
        self.register_buffer("tp_ema", torch.zeros(0))
        self.register_buffer("fn_ema", torch.zeros(0))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # the buffers are sized by the first batch (K classes): take the saved size before copying
        for name in ("tp_ema", "fn_ema"):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.zeros_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        # states saved before the counts were persistent lack them: the averages start afresh, as they did
        for name in ("tp_ema", "fn_ema"):
            if prefix + name in missing_keys:
                missing_keys.remove(prefix + name)

    def class_weights(self, p: Prepared) -> Tensor:
        """The detached weights ``w_c`` for this batch (updates the EMA buffers when ``ema`` is set)."""
        tp, fn = recall_counts(p)
        if self.ema is not None and self.training:
            if self.tp_ema.numel() != tp.numel():
                self.tp_ema, self.fn_ema = tp.clone(), fn.clone()
            else:
                m = self.ema
                self.tp_ema.mul_(m).add_((1 - m) * tp.to(self.tp_ema))
                self.fn_ema.mul_(m).add_((1 - m) * fn.to(self.fn_ema))
        if self.ema is not None and self.tp_ema.numel() == tp.numel():
            tp, fn = self.tp_ema.to(tp), self.fn_ema.to(fn)
        total = tp + fn
        return torch.where(total > 0, fn / (total + self.eps), torch.zeros_like(total))

    def forward_prepared(self, p: Prepared) -> Tensor:
        w = self.class_weights(p).to(p.logits)
        if p.multilabel:
            return self.reduce_multilabel(multilabel_ce_terms(p, w), p)
        return self.reduce_terms(voxel_ce_terms(p, _mask_weight(w, self.class_mask(p))), p)


def recall_loss(logits: Tensor, target: Tensor, **kwargs) -> Tensor:
    """Functional form of :class:`RecallLoss` (no EMA state)."""
    return RecallLoss(**kwargs)(logits, target)
