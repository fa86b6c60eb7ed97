"""Cross-entropy family: CE, weighted CE, TopK CE, class-balanced CE, OHEM.

All are per-voxel losses ``ℓ_v = −Σ_c w_c y_{v,c} log z_{v,c}`` averaged over the voxels that count;
they differ in the class weights ``w`` and in which voxels count.
"""

from __future__ import annotations

from torch import Tensor

from segbalance.monai_losses.base import SegLoss
from segbalance.monai_losses.inputs import Prepared, reduce_voxels
from segbalance.monai_losses.registry import register

__all__ = ["CrossEntropyLoss", "cross_entropy"]


def voxel_cross_entropy(p: Prepared, weight: Tensor | None = None) -> Tensor:
    """Per-voxel ``−Σ_c w_c y_c log z_c`` as ``(B, *spatial)`` (soft targets allowed)."""
    terms = p.onehot * p.log_probs
    if weight is not None:
        terms = terms * weight.to(terms).view(1, -1, *([1] * (terms.ndim - 2)))
    return -terms.sum(1)


@register("ce")
class CrossEntropyLoss(SegLoss):
    """Cross-entropy ``L = −(1/N) Σ_v Σ_c y_{v,c} log z_{v,c}`` (000 Eq. 1; 004 Eq. 1).

    Softmax over channels for ``C > 1``, binary cross-entropy for ``C == 1`` (sigmoid). Equal to
    ``torch.nn.functional.cross_entropy`` with ``ignore_index`` (mean over non-ignored voxels).
    ``include_background`` is not used: CE is defined over all classes.

    Example:
        >>> import torch
        >>> loss = CrossEntropyLoss()
        >>> logits = torch.zeros(1, 3, 4, 4)
        >>> target = torch.zeros(1, 1, 4, 4, dtype=torch.long)
        >>> round(float(loss(logits, target)), 4)  # log(3)
        1.0986
    """

    def forward_prepared(self, p: Prepared) -> Tensor:
        return reduce_voxels(voxel_cross_entropy(p), p.valid, self.reduction)


def cross_entropy(logits: Tensor, target: Tensor, **kwargs) -> Tensor:
    """Functional form of :class:`CrossEntropyLoss`."""
    return CrossEntropyLoss(**kwargs)(logits, target)
