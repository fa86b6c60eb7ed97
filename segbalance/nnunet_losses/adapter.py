"""Adapters from segbalance losses to nnU-Net v2's training conventions.

nnU-Net hands the loss a list of network outputs (one per deep-supervision scale, highest resolution
first) and a list of ``(b, 1, …)`` int16 label maps; the ignore label, if any, is the highest label + 1
and has no output channel. :func:`build_nnunet_loss` turns a registered loss name into that callable:
``ignore_index`` set to the ignore label, spacing-aware losses given the voxel spacing of each scale, and
nnU-Net's own :class:`~nnunetv2.training.loss.deep_supervision.DeepSupervisionWrapper` with the weights of
``nnUNetTrainer._build_loss`` around it.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from torch import Tensor, nn

from segbalance.monai_losses import get, loss_class
from segbalance.monai_losses.boundary import loss_schedulers
from segbalance.nnunet_losses.deep_supervision import deep_supervision_weights

__all__ = ["ScaleAwareLoss", "build_nnunet_loss", "check_not_regions", "loss_schedulers", "accepts_spacing"]


def accepts_spacing(name: str) -> bool:
    """Whether the registered loss ``name`` takes a ``spacing`` argument (distance-based losses)."""
    cls = loss_class(name)
    return any("spacing" in inspect.signature(c.__init__).parameters for c in cls.__mro__ if c is not object)


def check_not_regions(label_manager, dataset_name: str = "this dataset") -> None:
    """``ValueError`` for region-based datasets (``regions_class_order`` in dataset.json).

    Region-based training (overlapping regions, sigmoid outputs, bool one-hot targets) is not supported
    by the segbalance trainers: their losses are softmax losses over mutually exclusive classes.
    """
    if getattr(label_manager, "has_regions", False):
        raise ValueError(
            f"{dataset_name} is region-based (dataset.json defines 'regions_class_order' and labels as "
            "tuples of label values); segbalance trainers support only plain label maps. Train it with "
            "nnU-Net's default nnUNetTrainer, or remove the regions from dataset.json."
        )


class ScaleAwareLoss(nn.Module):
    """Calls a spacing-aware loss with the voxel spacing of the scale its input comes from.

    The spacing of an output of spatial shape ``s`` is ``spacing · reference_shape / s`` per axis
    (nnU-Net's deep-supervision outputs are the patch downsampled by the pooling factors, so the ratio is
    the cumulative pooling factor). One loss instance per distinct spacing is built by ``get(name,
    spacing=…, **kwargs)``; instances with a ``scheduler`` (boundary pairings) all share the first one's,
    so one ``step()`` per epoch moves every scale.
    """

    def __init__(self, name: str, spacing: Sequence[float], reference_shape: Sequence[int], **kwargs) -> None:
        super().__init__()
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
            self.losses[key] = loss
        return self.losses[key]

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.loss_for_shape(tuple(logits.shape[2:]))(logits, target)

    def get_extra_state(self) -> dict:
        return {"scheduler": None if self.scheduler is None else self.scheduler.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])


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
) -> nn.Module:
    """The nnU-Net training loss for the registered segbalance loss ``name``.

    Args:
        name, loss_kwargs: registry name and constructor arguments (``segbalance.monai_losses.get``).
        ignore_label: nnU-Net's ignore label (``label_manager.ignore_label``), passed as ``ignore_index``.
        has_regions: ``label_manager.has_regions``; region-based datasets are refused (``ValueError``).
        deep_supervision_scales: ``nnUNetTrainer._get_deep_supervision_scales()``; ``None`` without deep
            supervision. With it the loss is wrapped in nnU-Net's ``DeepSupervisionWrapper`` with the weights
            of :func:`deep_supervision_weights` (``is_ddp``/``compiled`` select its multi-GPU safeguard).
        spacing, patch_size: the configuration's voxel spacing (array order) and patch size, required by
            spacing-aware losses (boundary, hd_dt, …); each deep-supervision scale gets its own spacing.
    """
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    if has_regions:
        check_not_regions(type("RegionLabels", (), {"has_regions": True})(), dataset_name)
    kwargs = dict(loss_kwargs or {})
    if ignore_label is not None:
        kwargs.setdefault("ignore_index", int(ignore_label))
    if accepts_spacing(name) and "spacing" not in kwargs:
        if spacing is None or patch_size is None:
            raise ValueError(f"loss {name!r} is spacing-aware: pass the configuration's spacing, patch_size")
        loss: nn.Module = ScaleAwareLoss(name, spacing, patch_size, **kwargs)
    else:
        loss = get(name, **kwargs)
    if deep_supervision_scales is not None:
        weights = deep_supervision_weights(len(deep_supervision_scales), is_ddp=is_ddp, compiled=compiled)
        loss = DeepSupervisionWrapper(loss, weights)
    return loss
