"""Adapters from segbalance losses to nnU-Net v2's training conventions.

nnU-Net hands the loss a list of network outputs (one per deep-supervision scale, highest resolution
first) and a list of targets per scale: ``(b, 1, …)`` int16 label maps, where the ignore label, if any,
is the highest label + 1 and has no output channel; or, for region-based datasets
(``regions_class_order`` in dataset.json), ``(b, R, …)`` bool one-hot regions that overlap, trained with
per-channel sigmoid, the ignore label then being an extra last channel (``True`` = ignored).
:func:`build_nnunet_loss` turns a registered loss name into that callable: ``ignore_index`` set to the
ignore label (or :class:`RegionTargets` for regions), spacing-aware losses given the voxel spacing of each
scale, and nnU-Net's own :class:`~nnunetv2.training.loss.deep_supervision.DeepSupervisionWrapper` with the
weights of ``nnUNetTrainer._build_loss`` around it. The plan's ``batch_dice`` sets ``batch`` of the losses
that have it (:func:`batch_dice_kwargs`), and ``compile_losses`` compiles every segbalance loss built
(:func:`~segbalance.monai_losses.compile_loss`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from segbalance.monai_losses import compile_loss, get, loss_class
from segbalance.monai_losses.inputs import float32_math
from segbalance.monai_losses.registry import accepts_kwarg, multilabel_names, supports_multilabel
from segbalance.monai_losses.schedules import loss_schedulers
from segbalance.nnunet_losses.deep_supervision import deep_supervision_weights

__all__ = [
    "InstanceTargets",
    "instance_map_kind",
    "RegionTargets",
    "ScaleAwareLoss",
    "build_nnunet_loss",
    "check_regions_supported",
    "loss_schedulers",
    "accepts_spacing",
    "accepts_kwarg",
    "batch_dice_kwargs",
    "region_loss_kwargs",
]


def accepts_spacing(name: str) -> bool:
    """Whether the registered loss ``name`` takes a ``spacing`` argument (distance-based losses)."""
    return accepts_kwarg(name, "spacing")


def batch_dice_kwargs(name: str, loss_kwargs: dict | None, batch_dice: bool) -> dict:
    """``loss_kwargs`` with ``batch`` set to nnU-Net's ``batch_dice`` (``configuration_manager.batch_dice``,
    which nnU-Net passes to its Dice term) wherever the loss has a ``batch`` flag and the arguments do not
    set it: the loss itself, each ``compound`` term (in its ``kwargs``), the region part of a boundary
    pairing (``region_kwargs``). An explicit ``batch`` always wins."""
    kwargs = dict(loss_kwargs or {})
    cls = loss_class(name)
    if accepts_kwarg(name, "batch"):
        kwargs.setdefault("batch", bool(batch_dice))
    elif cls.registry_name == "compound" and isinstance(kwargs.get("terms"), dict):
        from segbalance.monai_losses.compound import _term_spec

        terms = {}
        for term, spec in kwargs["terms"].items():
            weight, term_kwargs = _term_spec(term, spec)
            terms[term] = {"weight": weight, "kwargs": batch_dice_kwargs(term, term_kwargs, batch_dice)}
        kwargs["terms"] = terms
    elif getattr(cls, "region", "") and accepts_kwarg(name, "region_kwargs"):
        region = dict(kwargs.get("region_kwargs") or {})
        if accepts_kwarg(cls.region, "batch"):
            region.setdefault("batch", bool(batch_dice))
            kwargs["region_kwargs"] = region
    return kwargs


def check_regions_supported(
    name: str, loss_kwargs: dict | None = None, dataset_name: str = "this dataset"
) -> None:
    """``ValueError`` unless loss ``name`` has a per-channel sigmoid (multi-label) form, as regions need."""
    if not supports_multilabel(name, loss_kwargs):
        raise ValueError(
            f"{dataset_name} is region-based (dataset.json has 'regions_class_order'; sigmoid outputs, "
            f"one-hot region targets) and loss {name!r} has no per-channel sigmoid (multi-label) form; "
            f"losses that have one: {', '.join(multilabel_names())}"
        )


def region_loss_kwargs(loss_kwargs: dict | None) -> dict:
    """Constructor arguments of a loss for region targets: per-channel sigmoid, one-hot targets, every
    channel scored (each is a foreground region; ``include_background`` may still be overridden)."""
    kwargs = dict(loss_kwargs or {})
    if "ignore_index" in kwargs:
        raise ValueError("region-based targets carry the ignore label as a mask channel; drop ignore_index")
    kwargs.update(sigmoid=True, to_onehot_y=False)
    kwargs.pop("softmax", None)
    kwargs.setdefault("include_background", True)
    return kwargs


class RegionTargets(nn.Module):
    """Calls a loss (its sigmoid form) with nnU-Net's region targets ``(b, R[+1], …)`` (bool or 0/1).

    With ``has_ignore`` the last target channel is nnU-Net's ignore mask (``True`` = ignored, as in
    ``DC_and_BCE_loss``): it is removed and its voxels are excluded from every sum of the loss (the
    loss's prepared input gets ``valid = ~mask`` and a target zeroed there, as label-map targets do with
    ``ignore_index``). ``loss`` is a segbalance loss module or a :class:`ScaleAwareLoss` of them.
    """

    def __init__(self, loss: nn.Module, has_ignore: bool = False) -> None:
        super().__init__()
        self.loss = loss
        self.has_ignore = bool(has_ignore)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        loss = self.loss
        if isinstance(loss, ScaleAwareLoss):
            loss = loss.loss_for_shape(tuple(logits.shape[2:]))
        if not self.has_ignore:
            return loss(logits, target.float() if target.dtype == torch.bool else target)
        if target.shape[1] != logits.shape[1] + 1:
            raise ValueError(
                f"region target with ignore channel must have {logits.shape[1] + 1} channels (regions + "
                f"ignore mask) for logits {tuple(logits.shape)}, got {tuple(target.shape)}"
            )
        valid = target[:, -1] == 0
        regions = target[:, :-1].float()
        with float32_math(logits.device.type):
            p = loss.prepare(logits, regions)
            p = dataclasses.replace(p, valid=valid, onehot=p.onehot * valid.unsqueeze(1))
            return loss.forward_prepared(p)


def instance_map_kind(name: str) -> str | None:
    """The instance maps loss ``name`` reads (``"components"``, ``"voronoi"``), ``None`` for other losses."""
    return getattr(loss_class(name), "instance_maps", None)


class InstanceTargets(nn.Module):
    """Calls an instance loss (blob, CC-DiceCE) with nnU-Net targets that carry its maps.

    The segbalance trainers' data loader appends one map channel per output channel to each scale's
    target (:class:`~segbalance.trainers.instance.InstanceMapsTransform`): ``(b, 1 + C, …)``; channel 0 is
    the label map, the rest the maps, handed to ``loss(logits, labels, maps)``. A ``(b, 1, …)`` target
    (no maps: a user's own pipeline, a test) is passed on as it is, and the loss computes the maps itself
    (and warns once).
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if target.shape[1] == 1:
            return self.loss(logits, target)
        if target.shape[1] != 1 + logits.shape[1]:
            raise ValueError(
                f"instance-loss target must be (b, 1, …) labels or (b, 1 + C, …) labels + instance maps "
                f"for logits {tuple(logits.shape)}, got {tuple(target.shape)}"
            )
        return self.loss(logits, target[:, :1], target[:, 1:])


class ScaleAwareLoss(nn.Module):
    """Calls a spacing-aware loss with the voxel spacing of the scale its input comes from.

    The spacing of an output of spatial shape ``s`` is ``spacing · reference_shape / s`` per axis
    (nnU-Net's deep-supervision outputs are the patch downsampled by the pooling factors, so the ratio is
    the cumulative pooling factor). One loss instance per distinct spacing is built by ``get(name,
    spacing=…, **kwargs)`` (those of ``scales`` at once, others when first seen); instances with a
    ``scheduler`` (boundary pairings) all share the first one's, so setting it moves every scale. With
    ``compile=True`` every instance is compiled (:func:`~segbalance.monai_losses.compile_loss`) when built.
    """

    def __init__(
        self,
        name: str,
        spacing: Sequence[float],
        reference_shape: Sequence[int],
        scales: Sequence[Sequence[float]] | None = None,
        compile: bool = False,
        **kwargs,
    ) -> None:
        super().__init__()
        self.compile = bool(compile)
        if len(spacing) != len(reference_shape):
            raise ValueError(
                f"spacing {tuple(spacing)} and reference_shape {tuple(reference_shape)} differ in length"
            )
        self.name = name
        self.spacing = tuple(float(s) for s in spacing)
        self.reference_shape = tuple(int(s) for s in reference_shape)
        self.kwargs = kwargs
        self.losses = nn.ModuleDict()
        self.scheduler = None
        self.loss_for_shape(self.reference_shape)
        for scale in scales or ():
            self.loss_for_shape(tuple(max(1, round(r * s)) for r, s in zip(self.reference_shape, scale)))

    def spacing_for_shape(self, shape: Sequence[int]) -> tuple[float, ...]:
        if len(shape) != len(self.spacing):
            raise ValueError(
                f"logits have {len(shape)} spatial dims, spacing {self.spacing} has {len(self.spacing)}"
            )
        return tuple(sp * ref / s for sp, ref, s in zip(self.spacing, self.reference_shape, shape))

    def loss_for_shape(self, shape: Sequence[int]) -> nn.Module:
        spacing = self.spacing_for_shape(shape)
        key = "x".join(f"{s:.6g}" for s in spacing).replace(".", "_")
        if key not in self.losses:
            loss = get(self.name, spacing=spacing, **self.kwargs)
            if hasattr(loss, "scheduler"):
                if self.scheduler is None:
                    self.scheduler = loss.scheduler
                else:
                    loss.scheduler = self.scheduler
            self.losses[key] = compile_loss(loss) if self.compile else loss
        return self.losses[key]

    def forward(self, logits: Tensor, target: Tensor, *extra: Tensor) -> Tensor:
        return self.loss_for_shape(tuple(logits.shape[2:]))(logits, target, *extra)


def build_nnunet_loss(
    name: str,
    loss_kwargs: dict | None = None,
    *,
    ignore_label: int | None = None,
    has_regions: bool = False,
    deep_supervision_scales: Sequence[Sequence[float]] | None = None,
    is_ddp: bool = False,
    compiled: bool = False,
    spacing: Sequence[float] | None = None,
    patch_size: Sequence[int] | None = None,
    dataset_name: str = "this dataset",
    batch_dice: bool | None = None,
    compile_losses: bool = False,
) -> nn.Module:
    """The nnU-Net training loss for the registered segbalance loss ``name``.

    Args:
        name, loss_kwargs: registry name and constructor arguments (``segbalance.monai_losses.get``).
        ignore_label: nnU-Net's ignore label (``label_manager.ignore_label``): ``ignore_index`` for label
            maps; for regions the mask channel that nnU-Net appends to the targets.
        has_regions: ``label_manager.has_regions``: targets are one-hot regions; the loss is built with
            :func:`region_loss_kwargs` and called through :class:`RegionTargets`. Losses without a
            per-channel sigmoid form are refused (``ValueError`` naming those that have one).
        deep_supervision_scales: ``nnUNetTrainer._get_deep_supervision_scales()``; ``None`` without deep
            supervision. With it the loss is wrapped in nnU-Net's ``DeepSupervisionWrapper`` with the weights
            of :func:`deep_supervision_weights` (``is_ddp``/``compiled`` select its multi-GPU safeguard).
        spacing, patch_size: the configuration's voxel spacing (array order) and patch size, required by
            spacing-aware losses (boundary, hd_dt, …); each deep-supervision scale gets its own spacing.
        batch_dice: the plan's ``configuration_manager.batch_dice``; ``batch`` of the losses that have one
            follows it unless ``loss_kwargs`` set it (:func:`batch_dice_kwargs`). ``None``: left alone.
        compile_losses: compile every segbalance loss built (each scale's instance of a spacing-aware
            loss too) with :func:`~segbalance.monai_losses.compile_loss`: same values and gradients.
    """
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    kwargs = dict(loss_kwargs or {})
    if batch_dice is not None:
        kwargs = batch_dice_kwargs(name, kwargs, batch_dice)
    instances = instance_map_kind(name)
    if instances and has_regions:
        raise ValueError(
            f"{dataset_name} is region-based (dataset.json has 'regions_class_order'), and loss {name!r} "
            "scores connected components of exclusive labels: instance losses with overlapping regions are "
            "not supported. Train the dataset with plain labels, or use a region-capable loss."
        )
    if has_regions:
        check_regions_supported(name, kwargs, dataset_name)
        kwargs = region_loss_kwargs(kwargs)
    elif ignore_label is not None:
        kwargs.setdefault("ignore_index", int(ignore_label))
    if accepts_spacing(name) and "spacing" not in kwargs:
        if spacing is None or patch_size is None:
            raise ValueError(f"loss {name!r} is spacing-aware: pass the configuration's spacing, patch_size")
        loss: nn.Module = ScaleAwareLoss(
            name, spacing, patch_size, deep_supervision_scales, compile=compile_losses, **kwargs
        )
    else:
        loss = get(name, **kwargs)
        if compile_losses:
            loss = compile_loss(loss)
    if has_regions:
        loss = RegionTargets(loss, has_ignore=ignore_label is not None)
    if instances:
        loss = InstanceTargets(loss)
    if deep_supervision_scales is not None:
        weights = deep_supervision_weights(len(deep_supervision_scales), is_ddp=is_ddp, compiled=compiled)
        loss = DeepSupervisionWrapper(loss, weights)
    return loss
