"""Boundary loss (Kervadec et al.) and its rebalanced pairing with a region loss (GDL or Dice).

``L_B = (1/|Ω|) Σ_{v∈Ω} φ_G(v) s_θ(v)`` per image and foreground class (Ma 2020, §4.1; Kervadec et al.,
"Boundary loss for highly unbalanced segmentation", MIDL 2019, Eq. 5), ``φ_G`` the signed distance map of
the ground truth (negative inside, see :func:`~.distance.signed_distance_map`), ``s_θ`` the softmax
probability. Kervadec et al. train ``α·L_region + (1 − α)·L_B`` with α decreasing; here, as in the
design notes, ``(1 − α)·L_region + α·L_B`` with ``α`` from 0.01 up by 0.01 per epoch
(:class:`BoundaryWeightScheduler`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from segbalance.monai_losses.distance_inputs import DistanceLoss, masked_spatial_mean, target_signed_maps
from segbalance.monai_losses.inputs import Prepared
from segbalance.monai_losses.registry import loss_class, register
from segbalance.monai_losses.schedules import BoundaryWeightScheduler

__all__ = [
    "BoundaryLoss",
    "boundary_loss",
    "RegionBoundaryLoss",
    "GeneralizedDiceBoundaryLoss",
    "DiceBoundaryLoss",
    "DiceCEHausdorffDTLoss",
]


@register("boundary")
class BoundaryLoss(DistanceLoss):
    """Boundary loss ``L_B = mean_v φ_G(v) · s_θ(v)`` (Ma 2020, §4.1; Kervadec et al. 2019, Eq. 5).

    Per image and class, the mean over voxels of the target's signed distance map ``φ_G`` (LIVIAETS
    convention: ``φ = −(D_in − s_min) ≤ 0`` inside, 0 on the inner boundary, ``D_out > 0`` outside; in
    the units of ``spacing``) times the predicted probability; then ``reduction`` over (image, class).
    The loss is **negative at its optimum**: a perfect prediction sums ``φ_G`` over the inside, so the
    minimum is ``mean(φ_G · g) < 0``, not 0 — only its gradient ``φ_G`` matters; pair it with a region
    loss (:class:`GeneralizedDiceBoundaryLoss`).

    Classes that are absent from an image or fill it have ``φ_G = 0`` and contribute 0. Gradients flow
    only through ``s_θ``; ``φ_G`` is computed from the target without gradient, exact and on the logits'
    device (:mod:`~.distance`), or taken from ``dist``. Ignored voxels (``ignore_index``) count as outside
    every class for ``φ_G`` and are left out of the mean.

    Args:
        spacing: voxel size per spatial axis (array order, e.g. ``(z, y, x)`` mm) or one number; default 1.
        include_background: score class 0 too (default ``False``: foreground classes, as Kervadec et al.).
        distance_method: EDT implementation (:func:`~.distance.euclidean_distance_transform`).
        other arguments: see :class:`~.base.SegLoss`.

    Differences to LIVIAETS/boundary-loss: 2D and 3D, spacing-aware with the inside offset ``s_min``
    instead of 1 (identical at unit spacing), distances computed on the logits' device per step.

    Example:
        >>> import torch
        >>> target = torch.tensor([[[[0, 1, 1, 1, 0, 0]]]])          # (B, 1, H=1, W=6)
        >>> logits = torch.tensor([[[[9., -9, -9, -9, 9, 9]], [[-9., 9, 9, 9, -9, -9]]]])
        >>> round(float(BoundaryLoss()(logits, target)), 3)       # φ = [1, 0, -1, 0, 1, 2] for class 1
        -0.167
    """

    def __init__(
        self,
        *,
        spacing: float | Sequence[float] | None = None,
        include_background: bool = False,
        distance_method: str = "auto",
        **kwargs,
    ) -> None:
        super().__init__(
            spacing=spacing, distance_method=distance_method, include_background=include_background, **kwargs
        )

    def forward_prepared(self, p: Prepared, dist: Tensor | None = None) -> Tensor:
        channels = p.class_channels(self.include_background)
        spacing = self.spacing_for(p)
        phi = target_signed_maps(p, spacing, dist, self.distance_method, self.check_finite, channels)
        per_item = masked_spatial_mean(phi * p.probs[:, channels], p.valid)  # (B, K')
        return self.reduce_region(per_item, p)


def boundary_loss(logits: Tensor, target: Tensor, dist: Tensor | None = None, **kwargs) -> Tensor:
    """Functional form of :class:`BoundaryLoss`."""
    return BoundaryLoss(**kwargs)(logits, target, dist)


class RegionBoundaryLoss(DistanceLoss):
    """``(1 − α)·L_region + α·L_B``, α from :class:`BoundaryWeightScheduler` (Kervadec et al. §3).

    The region loss is the registered loss ``region`` (``"gdl"`` or ``"dice"``) built with its own defaults,
    this module's convention flags and ``region_kwargs``; both terms share one prepared input. Step
    ``loss.scheduler`` once per epoch, or set it with
    :func:`~.schedules.set_schedulers_epoch` (the schedule is a function of the epoch; nothing to save).

    Items are images: ``reduction="none"`` gives ``(B, 1, 1, …)`` values
    ``(1 − α)·mean_k L_region[b, k] + α·mean_k L_B[b, k]``, ``"sum"`` their sum, ``"mean"`` their mean
    (= ``(1 − α)·L_region + α·L_B`` with both terms mean-reduced). ``"none"``/``"sum"`` need a region loss
    with per-image values (not ``batch=True``).

    Args:
        alpha_start, alpha_step, alpha_max: the schedule (0.01, 0.01, 0.99); ``alpha_step=0`` fixes α.
        spacing, distance_method, include_background: of the boundary term (foreground classes by default).
        region_kwargs: extra constructor arguments of the region loss.
        distance_kwargs: extra constructor arguments of the distance term (e.g. HD-DT's exponent ``alpha``).
    """

    region: str = ""
    #: the registered distance term (``"boundary"``; ``"hd_dt"`` in :class:`DiceCEHausdorffDTLoss`)
    distance: str = "boundary"
    #: region_kwargs used when the caller gives none (the subclass's reading of its pairing)
    default_region_kwargs: dict = {}
    background_scope = "boundary_term"
    none_style = "image"

    def __init__(
        self,
        *,
        alpha_start: float = 0.01,
        alpha_step: float = 0.01,
        alpha_max: float = 0.99,
        spacing: float | Sequence[float] | None = None,
        include_background: bool = False,
        distance_method: str = "auto",
        region_kwargs: dict | None = None,
        distance_kwargs: dict | None = None,
        **kwargs,
    ) -> None:
        super().__init__(
            spacing=spacing, distance_method=distance_method, include_background=include_background, **kwargs
        )
        self.scheduler = BoundaryWeightScheduler(alpha_start, alpha_step, alpha_max)
        conventions = self.convention_kwargs()
        region_cls = loss_class(self.region)
        region_kwargs = {**self.default_region_kwargs, **(region_kwargs or {})}
        self.region_loss = region_cls(**{**conventions, **region_kwargs, "reduction": "none"})
        self.boundary_loss = loss_class(self.distance)(
            spacing=spacing,
            include_background=include_background,
            distance_method=distance_method,
            reduction="none",
            **{**conventions, **(distance_kwargs or {})},
        )

    @property
    def alpha(self) -> float:
        return self.scheduler.alpha

    def forward_prepared(self, p: Prepared, dist: Tensor | None = None) -> Tensor:
        alpha = self.alpha
        region = self.region_loss.forward_prepared(p)
        boundary = self.boundary_loss.forward_prepared(p, dist)
        if self.reduction == "mean":
            return (1.0 - alpha) * self.region_loss.mean_of_none(region, p) + alpha * boundary.mean()
        try:
            per_region = self.region_loss.per_image(region, p)
        except ValueError as exc:
            raise ValueError(f"reduction={self.reduction!r} needs per-image region values: {exc}") from exc
        per_image = (1.0 - alpha) * per_region + alpha * self.boundary_loss.per_image(boundary, p)
        return self.reduce_region(per_image, p)


@register("gdl_boundary")
class GeneralizedDiceBoundaryLoss(RegionBoundaryLoss):
    """``(1 − α)·GDL + α·L_B``, the pairing of Kervadec et al. (see :class:`RegionBoundaryLoss`).

    Example:
        >>> loss = GeneralizedDiceBoundaryLoss(spacing=(2.5, 0.8, 0.8))
        >>> loss.alpha, loss.scheduler.step()
        (0.01, 0.02)
    """

    region = "gdl"


@register("dice_boundary")
class DiceBoundaryLoss(RegionBoundaryLoss):
    """``(1 − α)·Dice + α·L_B`` (see :class:`RegionBoundaryLoss`)."""

    region = "dice"


@register("dice_ce_hd_dt")
class DiceCEHausdorffDTLoss(RegionBoundaryLoss):
    """``(1 − α)·(L_Dice^fg + L_CE) + α·L_HD-DT``: nnU-Net's Dice + CE with the Hausdorff distance-transform
    loss (Karimi & Salcudean 2020, Eq. 8; Ma 2020, §4.2) added under the boundary schedule of
    :class:`RegionBoundaryLoss` (α = 0.01 + 0.01·epoch).

    Karimi & Salcudean train their HD loss beside a Dice term; alone (``hd_dt``) it weighs a missed voxel of
    a small lesion by ``d_G² ≈`` its own tiny depth and a false positive by its squared distance to the
    lesion, so the cheapest state is to predict the lesion nowhere, and nnU-Net never switches it on
    (docs/rare-class.md). The region term is
    :class:`~segbalance.monai_losses.compound.DiceCrossEntropyLoss` with the Dice term over the foreground
    classes (nnU-Net's ``do_bg=False``; ``region_kwargs`` to change it),
    the distance term :class:`~segbalance.monai_losses.hausdorff.HausdorffDistanceLoss` (exponent 2,
    ``distance_kwargs={"alpha": …}``), foreground classes, spacing-aware.

    Example:
        >>> loss = DiceCEHausdorffDTLoss(spacing=(2.5, 0.8, 0.8))
        >>> loss.alpha, type(loss.boundary_loss).__name__, loss.region_loss.include_background
        (0.01, 'HausdorffDistanceLoss', False)
    """

    region = "dice_ce"
    distance = "hd_dt"
    default_region_kwargs = {"include_background": False}
