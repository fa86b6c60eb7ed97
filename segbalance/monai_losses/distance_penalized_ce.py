"""Distance map penalised cross-entropy (Caliva et al., MIDL 2019; Ma 2020, §2.4, Eq. 6)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from segbalance.monai_losses.cross_entropy import voxel_ce_terms
from segbalance.monai_losses.distance import euclidean_distance_transform
from segbalance.monai_losses.distance_inputs import DistanceLoss, target_signed_maps
from segbalance.monai_losses.inputs import Prepared
from segbalance.monai_losses.registry import register

__all__ = ["DistancePenalizedCELoss", "distance_penalty", "distance_penalized_ce"]


def _penalty_from_inside_distance(inside: Tensor, d_in: Tensor) -> Tensor:
    """``(M − d)/(M − m)`` inside each item's mask (1 where ``M = m``), 0 elsewhere and without a boundary."""
    nd = inside.ndim - 2
    shape = inside.shape[:2] + (1,) * nd
    flat = inside.flatten(2)
    keep = inside & (flat.any(-1) & ~flat.all(-1)).view(shape)
    inf = torch.full((), torch.inf, dtype=d_in.dtype, device=d_in.device)
    peak = torch.where(keep, d_in, -inf).flatten(2).amax(-1).view(shape)
    low = torch.where(keep, d_in, inf).flatten(2).amin(-1).view(shape)
    span = peak - low
    ratio = (peak - d_in) / torch.where(span > 0, span, torch.ones_like(span))
    penalty = torch.where(span > 0, ratio, torch.ones_like(ratio))
    return torch.where(keep, penalty, torch.zeros((), dtype=d_in.dtype, device=d_in.device))


@torch.compiler.disable  # host EDT: one clean graph break under torch.compile
@torch.no_grad()
def distance_penalty(
    mask: Tensor, spacing: float | Sequence[float] | None = None, *, method: str = "auto"
) -> Tensor:
    """Caliva et al.'s penalty ``D_k`` per item and class: the inverted, normalised distance transform.

    Inside class ``k``: ``D_k(v) = (M_k − d_k(v)) / (M_k − m_k)`` with ``d_k(v)`` the distance (with
    spacing) of ``v`` to the nearest voxel outside class ``k``, ``M_k`` and ``m_k`` its maximum and minimum
    over the class in that image (``m_k`` = one voxel step); 0 outside the class. ``D`` is 1 on the
    boundary and 0 at the class's deepest voxel; a class that is all boundary (``M_k = m_k``) gets 1
    where JunMa11's code divides 0 by 0. For a binary mask the foreground and background terms together are
    ``compute_edts_forPenalizedLoss`` of JunMa11/SegLoss. Classes absent from an image or filling it get
    0 (plain CE there).

    Args:
        mask: ``(B, K, *spatial)`` one-hot target (thresholded at 0.5).
        spacing: voxel size per spatial axis or one number; default 1.
    """
    inside = mask > 0.5 if mask.is_floating_point() else mask != 0
    d_in = euclidean_distance_transform(inside, spacing, spatial_dims=mask.ndim - 2, method=method)
    return _penalty_from_inside_distance(inside, d_in)


@register("dpce")
class DistancePenalizedCELoss(DistanceLoss):
    """DPCE ``L = −(1/N) Σ_v (1 + D(v)) Σ_c g_{v,c} log s_{v,c}`` (Ma 2020, Eq. 6; Caliva et al. 2019).

    Cross-entropy weighted per voxel by ``1 + D``, ``D(v) = Σ_c g_{v,c} D_c(v)`` the penalty of the voxel's
    own class (:func:`distance_penalty`): boundary voxels weigh twice as much as the deepest ones. The
    weights come from the target only (no gradient). Mean over the voxels that count;
    ``reduction="none"`` returns the per-class terms ``(B, C', *spatial)``; ``include_background=False``
    drops class 0's term from the class sum, as for :class:`~.cross_entropy.CrossEntropyLoss`.

    The public PyTorch code (JunMa11/SegLoss ``DisPenalizedCE``) computes ``weighted_loss = loss * dist``
    and then returns ``loss.mean()``: the penalty is never applied, it is plain CE. It is also binary and
    3D only, without spacing. Here the weighting is applied, for any number of classes, 2D/3D, with spacing.

    Args:
        spacing: voxel size per spatial axis (array order) or one number; default 1.
        distance_method: EDT implementation (:func:`~.distance.euclidean_distance_transform`).
        other arguments: see :class:`~.base.SegLoss`.

    ``dist`` (optional) are the target's signed maps (:func:`~.distance.signed_distance_map`, same
    ``spacing``); inside a class ``d = s_min − φ``.

    Example:
        >>> import torch
        >>> target = torch.tensor([[[[1, 1, 1, 1, 1, 0]]]])   # class 1: d = 5,4,3,2,1 → D = 0,¼,½,¾,1
        >>> logits = torch.zeros(1, 2, 1, 6)                   # CE = log 2; class 0 is all boundary: D = 1
        >>> round(float(DistancePenalizedCELoss()(logits, target) / torch.log(torch.tensor(2.))), 4)
        1.5833
    """

    background_scope = "class_sum"
    none_style = "voxel"

    def forward_prepared(self, p: Prepared, dist: Tensor | None = None) -> Tensor:
        with torch.no_grad():
            spacing = self.spacing_for(p)
            if dist is None:
                penalty = distance_penalty(p.onehot, spacing, method=self.distance_method)
            else:
                phi = target_signed_maps(p, spacing, dist, self.distance_method, self.check_finite)
                inside = p.onehot > 0.5
                penalty = _penalty_from_inside_distance(inside, min(spacing) - phi)
            weight = 1.0 + (p.onehot * penalty).sum(1)
        return self.reduce_terms(weight.unsqueeze(1) * voxel_ce_terms(p, self.class_mask(p)), p)


def distance_penalized_ce(logits: Tensor, target: Tensor, dist: Tensor | None = None, **kwargs) -> Tensor:
    """Functional form of :class:`DistancePenalizedCELoss`."""
    return DistancePenalizedCELoss(**kwargs)(logits, target, dist)
