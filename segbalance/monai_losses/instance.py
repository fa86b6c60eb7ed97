r"""Instance-imbalance losses: every ground-truth connected component weighs the same, whatever its size.

Class-balancing losses weigh the lesion class against the background; inside the class a 20 cm³ lesion
still outweighs a 50 mm³ one by its voxels. The two losses here score each ground-truth component
(*instance*) on its own and average over instances:

* :class:`BlobLoss` (``"blob"``; Kofler et al., *blob loss: instance imbalance aware loss functions for
  semantic segmentation*, IPMI 2023, arXiv:2205.08209): per component, the base loss on the component plus
  the background, the other components masked out; ``α·global + β·mean over components``.
* :class:`CCDiceCELoss` (``"cc_dice_ce"``; Bouteille, Jaus, Kleesiek, Stiefelhagen & Heine, *Learning to
  Look Closer: A New Instance-Wise Loss for Small Cerebral Lesion Segmentation*, 2025, arXiv:2511.17146,
  after the CC-Metrics of Jaus et al.): the image is split into one Voronoi region per component (every
  voxel to its nearest component), Dice + CE per region, averaged.

Both take the per-voxel **base loss** ``ℓ(R) = λ_Dice·(1 − (2 Σ_R p y + ε_nr)/(Σ_R p + Σ_R y + ε_dr))
+ λ_CE·(1/|R|) Σ_R −[y log p + (1 − y) log(1 − p)]`` on a voxel set ``R``, per scored class channel (one
class against the rest: the binary form the papers use, and the one-vs-rest decomposition of Kundu,
Kofler et al. 2026 for several classes). ``p`` is the channel's probability (softmax over channels, or
sigmoid), ``log(1 − p)`` computed stably. Ignored voxels (``ignore_index``) belong to no ``R``.

**Instance maps.** The components (blob) or Voronoi regions (CC) come from the data loader:
``loss(logits, target, instances)``, ``instances`` ``(B, C, *spatial)`` integer ids like the logits
(channel ``c``: the maps of target channel ``c``; 0 = none), made by
``segbalance.preprocessing.InstanceMapsd`` (MONAI) or the nnU-Net trainers' data-loader transform, all
with :mod:`.instance_maps`. Called without them the loss computes them from the target on the CPU (cc3d,
scipy) on every call and warns once: fine for tests and ad-hoc use, slow in a training loop.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from segbalance.monai_losses.arguments import check_number
from segbalance.monai_losses.base import SegLoss
from segbalance.monai_losses.compound import log_one_minus_probs
from segbalance.monai_losses.distance import normalize_spacing
from segbalance.monai_losses.distance_inputs import check_spacing_argument
from segbalance.monai_losses.inputs import Prepared, float32_math
from segbalance.monai_losses.instance_maps import check_maps, instance_maps
from segbalance.monai_losses.registry import register

__all__ = ["InstanceLoss", "BlobLoss", "CCDiceCELoss", "blob_loss", "cc_dice_ce_loss", "group_sums"]

# the per-voxel quantities summed per instance id: p, y, p·y, 1, −y log p, −(1 − y) log(1 − p)
_P, _Y, _PY, _N, _POS, _NEG = range(6)


def group_sums(values: Tensor, ids: Tensor, num_ids: int) -> Tensor:
    """``(Q, B, K, num_ids)`` sums of ``values`` ``(Q, B, K, *spatial)`` over the voxels of each id of
    ``ids`` ``(B, K, *spatial)`` (ids in ``0..num_ids-1``); differentiable in ``values``."""
    q, b, k = values.shape[:3]
    flat = values.reshape(q, b * k, -1)
    index = ids.reshape(1, b * k, -1).expand(q, -1, -1)
    out = torch.zeros(q, b * k, num_ids, dtype=values.dtype, device=values.device)
    return out.scatter_add_(2, index, flat).reshape(q, b, k, num_ids)


class InstanceLoss(SegLoss):
    """Base of the instance losses: ``forward(input, target, instances=None)``, the base loss per voxel set.

    Args:
        lambda_dice, lambda_ce: weights of the Dice and CE parts of the base loss ``ℓ`` (1, 1).
        smooth_nr, smooth_dr: Dice smoothing (MONAI's defaults, 1e-5).
        include_background: score channel 0 too (default ``False``: the papers' foreground; binary
            single-channel inputs always score their one channel).
        other arguments: see :class:`~.base.SegLoss`.
    """

    #: the maps this loss reads (:data:`~.instance_maps.MAP_KINDS`)
    instance_maps: str = "components"
    background_scope = "channels"
    none_style = "region"

    def __init__(
        self,
        *,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        include_background: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(include_background=include_background, **kwargs)
        owner = type(self).__name__
        self.lambda_dice = check_number(owner, "lambda_dice", lambda_dice, low=0.0)
        self.lambda_ce = check_number(owner, "lambda_ce", lambda_ce, low=0.0)
        self.smooth_nr = check_number(owner, "smooth_nr", smooth_nr, low=0.0)
        self.smooth_dr = check_number(owner, "smooth_dr", smooth_dr, low=0.0)
        self._warned = False

    def map_spacing(self, p: Prepared) -> tuple[float, ...] | None:
        return None

    def forward(self, input: Tensor, target: Tensor, instances: Tensor | None = None) -> Tensor:
        """Loss of raw ``input`` logits ``(B, C, *spatial)`` against ``target`` (label map or one-hot), with
        the target's instance maps ``instances`` ``(B, C, *spatial)`` (computed here, with a warning, when
        ``None``)."""
        with float32_math(input.device.type if isinstance(input, Tensor) else "cpu"):
            return self.forward_prepared(self.prepare(input, target), instances)

    def scored_maps(self, p: Prepared, instances: Tensor | None) -> Tensor:
        """``(B, K', *spatial)`` int64 maps of the scored channels: checked, or computed from the target."""
        channels = p.class_channels(self.include_background)
        if instances is None:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"{type(self).__name__} called without instance maps: computing its "
                    f"{self.instance_maps!r} maps from the target on the CPU (cc3d) in every call. "
                    "Make them in the data loader "
                    "(segbalance.preprocessing.InstanceMapsd, or the segbalance nnU-Net trainers) and pass "
                    "loss(input, target, instances).",
                    stacklevel=3,
                )
            return instance_maps(p.onehot[:, channels], self.instance_maps, self.map_spacing(p))
        b, k = p.logits.shape[:2]
        expected = (b, 1 if p.binary else k) + tuple(p.logits.shape[2:])
        maps = check_maps(instances, expected, type(self).__name__).to(p.logits.device)
        if p.binary:
            return maps
        return maps[:, channels]

    def instance_sums(self, p: Prepared, maps: Tensor) -> tuple[Tensor, Tensor]:
        """Per-id sums ``(6, B, K', N+1)`` of the base loss's quantities over valid voxels, and
        ``(B, K', N+1)`` presence of each id (``N`` the largest id)."""
        channels = p.class_channels(self.include_background)
        probs = p.probs[:, channels]
        y = p.onehot[:, channels]
        pos = -y * p.log_probs[:, channels]
        neg = -(1.0 - y) * log_one_minus_probs(p)[:, channels]
        values = torch.stack([probs, y, probs * y, torch.ones_like(probs), pos, neg])
        if p.valid is not None:
            zero = torch.zeros((), device=values.device)
            values = torch.where(p.valid.unsqueeze(0).unsqueeze(2), values, zero)
        num_ids = int(maps.max()) + 1 if maps.numel() else 1
        sums = group_sums(values, maps, num_ids)
        with torch.no_grad():
            present = group_sums(torch.ones_like(maps, dtype=values.dtype)[None], maps, num_ids)[0] > 0
        return sums, present

    def base_loss(self, s: Tensor) -> Tensor:
        """``ℓ`` from sums ``s`` ``(6, …)`` of one voxel set each."""
        dice = 1.0 - (2.0 * s[_PY] + self.smooth_nr) / (s[_P] + s[_Y] + self.smooth_dr)
        ce = (s[_POS] + s[_NEG]) / s[_N].clamp_min(1.0)
        return self.lambda_dice * dice + self.lambda_ce * ce

    def forward_prepared(self, p: Prepared, instances: Tensor | None = None) -> Tensor:
        maps = self.scored_maps(p, instances)
        sums, present = self.instance_sums(p, maps)
        return self.reduce_region(self.combine(sums, present), p)

    def combine(self, sums: Tensor, present: Tensor) -> Tensor:
        """``(B, K')`` item losses from the per-id sums."""
        raise NotImplementedError


def _mean_over_present(values: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of ``values`` ``(B, K, N)`` over the present ids, and whether any is present, per ``(B, K)``."""
    weights = present.to(values.dtype)
    count = weights.sum(-1)
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    total = torch.where(present, values, zero).sum(-1)
    return total / count.clamp_min(1.0), count > 0


@register("blob")
class BlobLoss(InstanceLoss):
    r"""Blob loss (Kofler et al., IPMI 2023, Eq. 1–2) with Dice + CE as the base loss, α = 2, β = 1.

    Per image and scored class, with ``Ω`` the valid voxels, ``C_1 … C_N`` the ground-truth connected
    components of the class (``instances``) and ``B = Ω \ ∪_n C_n`` the rest:

    ``L = α·ℓ(Ω) + β·(1/N) Σ_n ℓ(C_n ∪ B)``

    ``ℓ`` the base loss of :mod:`.instance` (soft Dice + binary CE of the class channel). ``ℓ(C_n ∪ B)``
    sees component ``n`` and the background only: the **other components' voxels are left out** of every
    sum (Dice's ``Σp``, ``Σy``, CE's mean). The reference implementation (neuronflow/blob_loss) instead
    multiplies the network output by the mask, which sets the masked logits to 0, i.e. ``p = 0.5``: they
    stay in the loss, each adding 0.5 to Dice's ``Σp`` and ``log 2`` to the CE sum, and push the other
    lesions towards 0.5. An item without a component (an image without lesion of that class) is the
    global term alone, ``α·ℓ(Ω)``, as in the paper (the reference skips it in the blob mean).

    Items are (image, class): ``reduction="none"`` gives ``(B, C', 1, …)``, ``"mean"`` their mean.
    The per-component sums come from one ``scatter_add`` over the component ids (no loop over
    components), so the cost is that of Dice + CE plus the maps' making in the data loader.

    Args:
        alpha: weight of the global term (2, the paper's).
        beta: weight of the mean per-component term (1).
        other arguments: see :class:`InstanceLoss` and :class:`~.base.SegLoss`.

    Example:
        >>> import torch
        >>> target = torch.tensor([[[[1, 1, 1, 0, 0, 0, 1]]]])   # a 3-voxel and a 1-voxel lesion
        >>> logits = torch.full((1, 2, 1, 7), 0.0)
        >>> maps = torch.tensor([[[[0, 0, 0, 0, 0, 0, 0]], [[1, 1, 1, 0, 0, 0, 2]]]])
        >>> round(float(BlobLoss()(logits, target, maps)), 4)   # 2·1.1598 + (1.1931 + 1.3598)/2
        3.5961
    """

    instance_maps = "components"

    def __init__(self, *, alpha: float = 2.0, beta: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.alpha = check_number(type(self).__name__, "alpha", alpha, low=0.0)
        self.beta = check_number(type(self).__name__, "beta", beta, low=0.0)

    def combine(self, sums: Tensor, present: Tensor) -> Tensor:
        total = sums.sum(-1)
        global_term = self.base_loss(total)
        # component n's set C_n ∪ B: the sums of id n plus those of id 0 (the background B)
        per_component = self.base_loss(sums[..., 1:] + sums[..., :1])
        mean, has = _mean_over_present(per_component, present[..., 1:])
        return self.alpha * global_term + torch.where(has, self.beta * mean, torch.zeros_like(mean))


@register("cc_dice_ce")
class CCDiceCELoss(InstanceLoss):
    r"""CC-DiceCE (Bouteille, Jaus et al. 2025): Dice + CE per Voronoi region of the ground-truth components.

    Per image and scored class, with ``V_1 … V_N`` the Voronoi regions of the class's ground-truth
    components (``V_n``: the voxels nearer to component ``n`` than to any other, Euclidean distance in
    ``spacing`` units; together they tile the image), restricted to the valid voxels:

    ``L = (1/N) Σ_n ℓ(V_n)``, and ``ℓ(Ω)`` (the global Dice + CE) when ``N = 0``

    ``ℓ`` the base loss of :mod:`.instance`. Each region holds one lesion and all the prediction around
    it, so a false positive far from every lesion is charged to the nearest lesion's region, and every
    lesion weighs ``1/N`` whatever its size. Items are (image, class), as in :class:`BlobLoss`.

    Args:
        spacing: voxel size (array order) for the Voronoi regions when the loss computes them itself
            (no ``instances``); the data-loader transforms take the data's spacing.
        other arguments: see :class:`InstanceLoss` and :class:`~.base.SegLoss`.

    Example:
        >>> import torch
        >>> target = torch.tensor([[[[1, 0, 0, 0, 0, 0, 1]]]])
        >>> logits = torch.tensor([[[[0., 0, 0, 0, 0, 0, 0]], [[9., -9, -9, -9, -9, 9, 9]]]])
        >>> regions = torch.tensor([[[[0, 0, 0, 0, 0, 0, 0]], [[1, 1, 1, 1, 2, 2, 2]]]])  # ties: lower id
        >>> loss = CCDiceCELoss(lambda_ce=0.0)  # the false positive at x = 5 is in lesion 2's region
        >>> round(float(loss(logits, target, regions)), 3)  # region 1 perfect, region 2 Dice 2/3: mean 1/6
        0.167
    """

    instance_maps = "voronoi"

    def __init__(self, *, spacing: float | Sequence[float] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        check_spacing_argument(spacing)
        self.spacing = spacing

    def map_spacing(self, p: Prepared) -> tuple[float, ...]:
        return normalize_spacing(self.spacing, p.logits.ndim - 2)

    def combine(self, sums: Tensor, present: Tensor) -> Tensor:
        global_term = self.base_loss(sums.sum(-1))
        per_region = self.base_loss(sums[..., 1:])
        mean, has = _mean_over_present(per_region, present[..., 1:])
        return torch.where(has, mean, global_term)


def blob_loss(input: Tensor, target: Tensor, instances: Tensor | None = None, **kwargs) -> Tensor:
    """Functional form of :class:`BlobLoss`."""
    return BlobLoss(**kwargs)(input, target, instances)


def cc_dice_ce_loss(input: Tensor, target: Tensor, instances: Tensor | None = None, **kwargs) -> Tensor:
    """Functional form of :class:`CCDiceCELoss`."""
    return CCDiceCELoss(**kwargs)(input, target, instances)
