"""Distance maps as loss inputs: the base class of the distance-based losses and what only they use.

:mod:`.distance` holds the public transforms (exact EDT, signed and unsigned maps); this module turns them
into loss inputs: validating precomputed ``dist`` maps, the target's signed maps per scored channel,
unsigned fields recovered from signed ones, and the masked spatial mean of a per-voxel term.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from segbalance.monai_losses.base import SegLoss
from segbalance.monai_losses.distance import METHODS, normalize_spacing, signed_distance_map
from segbalance.monai_losses.distributed import all_gather_sum, is_distributed
from segbalance.monai_losses.inputs import Prepared, float32_math

__all__ = [
    "DistanceLoss",
    "check_dist",
    "target_signed_maps",
    "unsigned_from_signed",
    "masked_spatial_mean",
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
        distance maps ``(B, C, *spatial)`` of the target (e.g. from ``preprocessing.SignedDistanceMapd``),
        computed with this loss's ``spacing``."""
        with float32_math(logits.device.type if isinstance(logits, Tensor) else "cpu"):
            return self.forward_prepared(self.prepare(logits, target), dist)

    def forward_prepared(self, p: Prepared, dist: Tensor | None = None) -> Tensor:
        raise NotImplementedError


def check_dist(dist: Tensor, p: Prepared, check_finite: bool = True) -> Tensor:
    """Validate precomputed signed maps ``dist`` ``(B, C, *spatial)`` against prepared inputs; float32.

    ``C`` is the logits' channel count (1 for a binary sigmoid task, then ``dist`` is the foreground map).
    """
    if not isinstance(dist, Tensor):
        raise ValueError(f"dist must be a torch.Tensor of signed distance maps, got {type(dist).__name__}")
    channels = 1 if p.binary else p.num_classes
    expected = (p.logits.shape[0], channels) + tuple(p.logits.shape[2:])
    if tuple(dist.shape) != expected:
        raise ValueError(
            f"dist must have shape (B, C, *spatial) = {expected} like the logits, got {tuple(dist.shape)}"
        )
    dist = dist.to(device=p.logits.device, dtype=torch.float32)
    if check_finite and not bool(torch.isfinite(dist).all()):
        raise ValueError("dist contains NaN or Inf values")
    return dist


@torch.compiler.disable  # host EDT (edt/scipy): one clean graph break under torch.compile
@torch.no_grad()
def target_signed_maps(
    p: Prepared,
    spacing: tuple[float, ...],
    dist: Tensor | None = None,
    method: str = "auto",
    check_finite: bool = True,
    channels: slice = slice(None),
) -> Tensor:
    """Signed maps ``φ_G`` ``(B, K', *spatial)`` of the target's ``channels``: computed, or from ``dist``.

    For a binary task a one-channel ``dist`` holds the foreground map; the background's map follows
    exactly as ``φ_bg = s_min − φ_fg`` (the two classes share their boundary), 0 where the foreground
    has none.
    """
    if dist is None:
        return signed_distance_map(p.onehot[:, channels], spacing, method=method)
    dist = check_dist(dist, p, check_finite)
    if p.binary:
        flat = p.onehot[:, 1].flatten(1) > 0.5
        has_boundary = (flat.any(-1) & ~flat.all(-1)).view((-1, 1) + (1,) * (dist.ndim - 2))
        background = torch.where(has_boundary, min(spacing) - dist, torch.zeros_like(dist))
        dist = torch.cat([background, dist], dim=1)
    return dist[:, channels]


def unsigned_from_signed(phi: Tensor, mask: Tensor, spacing: tuple[float, ...]) -> Tensor:
    """:func:`unsigned_distance_map` recovered from :func:`signed_distance_map` and the mask, exactly.

    Inside ``d = s_min − φ``, outside ``d = φ``; items without a boundary (``φ ≡ 0``) stay 0.
    """
    flat = mask.flatten(2)
    has_boundary = (flat.any(-1) & ~flat.all(-1)).view(mask.shape[:2] + (1,) * (mask.ndim - 2))
    d = torch.where(mask, min(spacing) - phi, phi)
    return torch.where(has_boundary, d, torch.zeros_like(d))


def masked_spatial_mean(values: Tensor, valid: Tensor | None, batch: bool = False) -> Tensor:
    """Mean of ``(B, K, *spatial)`` values over the voxels that count: ``(B, K)``, or ``(K,)`` with ``batch``.

    Ignored voxels (``valid`` False) contribute nothing, not even a gradient; no valid voxel gives 0.
    With ``batch`` the sums are all-gathered under DDP (the mean over the global batch).
    """
    dims = tuple(range(2, values.ndim))
    if batch:
        dims = (0,) + dims
    if batch and is_distributed():
        if valid is None:
            total, count = values.sum(dims), torch.full_like(values.sum(dims), values[:, 0].numel())
        else:
            v = valid.unsqueeze(1)
            zero = torch.zeros((), dtype=values.dtype, device=values.device)
            total = torch.where(v, values, zero).sum(dims)
            count = v.expand_as(values).sum(dims).to(values.dtype)
        return all_gather_sum(total) / all_gather_sum(count).clamp_min(1)
    if valid is None:
        return values.mean(dim=dims)
    v = valid.unsqueeze(1)
    total = torch.where(v, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum(dims)
    count = v.expand_as(values).sum(dims).clamp_min(1)
    return total / count
