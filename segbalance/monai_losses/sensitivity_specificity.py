"""Sensitivity–specificity loss of Brosch et al. (2015), Ma 2020, Eq. 7."""

from __future__ import annotations

from torch import Tensor

from segbalance.monai_losses.dice import _RegionLoss
from segbalance.monai_losses.distributed import all_gather_sum
from segbalance.monai_losses.inputs import Prepared
from segbalance.monai_losses.registry import register

__all__ = ["SensitivitySpecificityLoss", "sensitivity_specificity_loss"]


@register("ss")
class SensitivitySpecificityLoss(_RegionLoss):
    """Sensitivity–specificity loss (Brosch et al. 2015; Ma 2020, Eq. 7), ``r = 0.05``.

    ``L_c = r·Σ (g − z)² g / (Σ g + smooth_dr) + (1 − r)·Σ (g − z)² (1 − g) / (Σ (1 − g) + smooth_dr)``:
    squared errors on the foreground (a soft miss rate, 1 − sensitivity) and on the background (a soft
    false-positive rate, 1 − specificity). Brosch et al. weigh the sensitivity term with the small ``r``
    because the specificity term's denominator (all background voxels) is huge. Per (image, class) or per
    class with ``batch=True``, then ``reduction``. The loss lies in ``[0, 1]``: 0 at a perfect prediction.
    Ma 2020 sums both fractions over classes; we take them per class (``reduction`` averages), like the other
    region losses, so one big class does not swamp a lesion.

    Args:
        r: weight of the sensitivity term (``w`` in Ma 2020, Eq. 7).

    Example:
        >>> import torch
        >>> probs = torch.tensor([[[[0.5, 1.0]], [[0.5, 0.0]]]])  # class 1 at voxel 0 only
        >>> target = torch.tensor([[[[1, 0]]]])
        >>> flags = dict(softmax=False, sigmoid=False, include_background=False, smooth_dr=0)
        >>> round(float(SensitivitySpecificityLoss(**flags)(probs, target)), 4)  # 0.05 * 0.25 + 0.95 * 0
        0.0125
    """

    none_style = "region"

    def __init__(self, *, r: float = 0.05, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"r must lie in [0, 1], got {r}")
        self.r = float(r)

    def per_class(self, p: Prepared) -> Tensor:
        ch = p.class_channels(self.include_background)
        z = p.probs[:, ch]
        g = p.onehot[:, ch]
        sq = (g - z) ** 2
        neg = 1.0 - g
        if p.valid is not None:
            sq = sq * p.valid_float
            neg = neg * p.valid_float
        dims = [0, *range(2, z.ndim)] if self.batch else list(range(2, z.ndim))
        sums = [(sq * g).sum(dims), g.sum(dims), (sq * neg).sum(dims), neg.sum(dims)]
        if self.batch:  # pooled over the global batch under DDP
            sums = [all_gather_sum(s) for s in sums]
        sens = sums[0] / (sums[1] + self.smooth_dr)
        spec = sums[2] / (sums[3] + self.smooth_dr)
        return self.r * sens + (1.0 - self.r) * spec

    def forward_prepared(self, p: Prepared) -> Tensor:
        return self.reduce_region(self.per_class(p), p, self.batch)


def sensitivity_specificity_loss(logits: Tensor, target: Tensor, **kwargs) -> Tensor:
    """Functional form of :class:`SensitivitySpecificityLoss`."""
    return SensitivitySpecificityLoss(**kwargs)(logits, target)
