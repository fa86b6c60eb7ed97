"""Boundary loss (Kervadec et al.) and its rebalanced pairing with a region loss (GDL or Dice).

``L_B = (1/|Ω|) Σ_{v∈Ω} φ_G(v) s_θ(v)`` per image and foreground class (004 §4.1; Kervadec et al.,
"Boundary loss for highly unbalanced segmentation", MIDL 2019, Eq. 5), ``φ_G`` the signed distance map of
the ground truth (negative inside, see :func:`~.distance.signed_distance_map`), ``s_θ`` the softmax
probability. Kervadec et al. train ``α·L_region + (1 − α)·L_B`` with α decreasing; here, as in the
design notes, ``(1 − α)·L_region + α·L_B`` with ``α`` from 0.01 up by 0.01 per epoch
(:class:`BoundaryWeightScheduler`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from segbalance.monai_losses.base import SegLoss
from segbalance.monai_losses.distance import (
    METHODS,
    masked_spatial_mean,
    normalize_spacing,
    target_signed_maps,
)
from segbalance.monai_losses.inputs import Prepared, float32_math, reduce_classes
from segbalance.monai_losses.registry import loss_class, register

__all__ = [
    "BoundaryLoss",
    "boundary_loss",
    "BoundaryWeightScheduler",
    "RegionBoundaryLoss",
    "GeneralizedDiceBoundaryLoss",
    "DiceBoundaryLoss",
    "loss_schedulers",
    "set_schedulers_epoch",
]


def check_spacing_argument(spacing) -> None:
    """Validate a loss's ``spacing`` argument at construction (its length is checked per call)."""
    if spacing is None:
        return
    if isinstance(spacing, (int, float)):
        normalize_spacing(spacing, 1)
    else:
        normalize_spacing(spacing, len(spacing))


def check_method(distance_method: str) -> None:
    if distance_method not in METHODS:
        raise ValueError(f"distance_method must be one of {METHODS}, got {distance_method!r}")


class DistanceLoss(SegLoss):
    """:class:`~.base.SegLoss` whose ``forward`` also accepts precomputed signed maps ``dist``."""

    def __init__(
        self,
        *,
        spacing: float | Sequence[float] | None = None,
        distance_method: str = "auto",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_spacing_argument(spacing)
        check_method(distance_method)
        self.spacing = spacing
        self.distance_method = distance_method

    def spacing_for(self, p: Prepared) -> tuple[float, ...]:
        return normalize_spacing(self.spacing, p.logits.ndim - 2)

    def forward(self, logits: Tensor, target: Tensor, dist: Tensor | None = None) -> Tensor:
        """Loss of ``logits`` ``(B, C, *spatial)`` against ``target``; ``dist``: optional precomputed signed
        distance maps ``(B, C, *spatial)`` of the target (e.g. from :class:`~.transforms.SignedDistanceMapd`),
        computed with this loss's ``spacing``."""
        with float32_math(logits.device.type if isinstance(logits, Tensor) else "cpu"):
            return self.forward_prepared(self.prepare(logits, target), dist)

    def forward_prepared(self, p: Prepared, dist: Tensor | None = None) -> Tensor:
        raise NotImplementedError


@register("boundary")
class BoundaryLoss(DistanceLoss):
    """Boundary loss ``L_B = mean_v φ_G(v) · s_θ(v)`` (004 §4.1; Kervadec et al. 2019, Eq. 5).

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
        return reduce_classes(per_item, self.reduction)


def boundary_loss(logits: Tensor, target: Tensor, dist: Tensor | None = None, **kwargs) -> Tensor:
    """Functional form of :class:`BoundaryLoss`."""
    return BoundaryLoss(**kwargs)(logits, target, dist)


class BoundaryWeightScheduler:
    """The rebalancing weight of Kervadec et al.: ``α_e = min(start + step_size · e, max_alpha)``.

    ``α`` weighs the boundary term in ``(1 − α)·L_region + α·L_B``; call :meth:`step` once per epoch.
    ``state_dict``/``load_state_dict`` let a trainer checkpoint and resume it.

    Example:
        >>> s = BoundaryWeightScheduler()
        >>> s.alpha, s.step(), s.step()
        (0.01, 0.02, 0.03)
        >>> s2 = BoundaryWeightScheduler(); s2.load_state_dict(s.state_dict()); s2.alpha
        0.03
    """

    def __init__(self, start: float = 0.01, step_size: float = 0.01, max_alpha: float = 0.99) -> None:
        for name, value in (("start", start), ("step_size", step_size), ("max_alpha", max_alpha)):
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        if start > max_alpha:
            raise ValueError(f"start ({start}) must not exceed max_alpha ({max_alpha})")
        self.start = float(start)
        self.step_size = float(step_size)
        self.max_alpha = float(max_alpha)
        self.epoch = 0

    @property
    def alpha(self) -> float:
        return round(min(self.start + self.step_size * self.epoch, self.max_alpha), 12)

    def step(self) -> float:
        """Advance one epoch; returns the new ``alpha``."""
        self.epoch += 1
        return self.alpha

    def state_dict(self) -> dict:
        return {
            "start": self.start,
            "step_size": self.step_size,
            "max_alpha": self.max_alpha,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        missing = {"start", "step_size", "max_alpha", "epoch"} - set(state)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)}")
        self.__init__(state["start"], state["step_size"], state["max_alpha"])
        self.epoch = int(state["epoch"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha}, epoch={self.epoch})"


class RegionBoundaryLoss(DistanceLoss):
    """``(1 − α)·L_region + α·L_B``, α from :class:`BoundaryWeightScheduler` (Kervadec et al. §3).

    The region loss is the registered loss ``region`` (``"gdl"`` or ``"dice"``) built with its own defaults,
    this module's convention flags and ``region_kwargs``; both terms share one prepared input. Step
    ``loss.scheduler`` once per epoch (the module's ``state_dict`` carries it).

    Items are images: ``reduction="none"`` gives ``(B,)`` values
    ``(1 − α)·mean_k L_region[b, k] + α·mean_k L_B[b, k]``, ``"sum"`` their sum, ``"mean"`` their mean
    (= ``(1 − α)·L_region + α·L_B`` with both terms mean-reduced). ``"none"``/``"sum"`` need a region loss
    with per-image values (not ``batch=True``).

    Args:
        alpha_start, alpha_step, alpha_max: the schedule (0.01, 0.01, 0.99); ``alpha_step=0`` fixes α.
        spacing, distance_method, include_background: of the boundary term (foreground classes by default).
        region_kwargs: extra constructor arguments of the region loss.
    """

    region: str = ""

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
        **kwargs,
    ) -> None:
        super().__init__(
            spacing=spacing, distance_method=distance_method, include_background=include_background, **kwargs
        )
        self.scheduler = BoundaryWeightScheduler(alpha_start, alpha_step, alpha_max)
        conventions = self.convention_kwargs()
        region_cls = loss_class(self.region)
        self.region_loss = region_cls(**{**conventions, **(region_kwargs or {}), "reduction": "none"})
        self.boundary_loss = BoundaryLoss(
            spacing=spacing,
            include_background=include_background,
            distance_method=distance_method,
            reduction="none",
            **conventions,
        )

    @property
    def alpha(self) -> float:
        return self.scheduler.alpha

    def get_extra_state(self) -> dict:
        return {"scheduler": self.scheduler.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])

    def forward_prepared(self, p: Prepared, dist: Tensor | None = None) -> Tensor:
        alpha = self.alpha
        region = self.region_loss.forward_prepared(p)
        boundary = self.boundary_loss.forward_prepared(p, dist)
        if self.reduction == "mean":
            return (1.0 - alpha) * region.mean() + alpha * boundary.mean()
        b = p.logits.shape[0]
        if region.ndim == 0 or region.shape[0] != b:
            raise ValueError(
                f"reduction={self.reduction!r} needs per-image region values (B={b}); the region loss "
                f"{self.region!r} returned shape {tuple(region.shape)} (is batch=True set?)"
            )
        per_image = (1.0 - alpha) * region.reshape(b, -1).mean(1) + alpha * boundary.reshape(b, -1).mean(1)
        return per_image.sum() if self.reduction == "sum" else per_image


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


def loss_schedulers(loss: nn.Module) -> list:
    """The distinct per-epoch schedulers (``.scheduler`` with ``step()``) inside ``loss``."""
    found: list = []
    for module in loss.modules():
        sched = getattr(module, "scheduler", None)
        if sched is not None and hasattr(sched, "step") and all(sched is not s for s in found):
            found.append(sched)
    return found


def set_schedulers_epoch(loss: nn.Module, epoch: int) -> list[float]:
    """Put every scheduler in ``loss`` at ``epoch`` (0-based; resume-safe); returns their ``alpha``."""
    alphas = []
    for sched in loss_schedulers(loss):
        sched.epoch = int(epoch)
        alphas.append(sched.alpha)
    return alphas
