"""Input conventions shared by every loss: validation, activation, one-hot targets, ignore masks.

Every loss in :mod:`segbalance.monai_losses` is called as ``loss(logits, target)`` with

* ``logits``: raw network output ``(B, C, *spatial)`` with 2 or 3 spatial dims, any float dtype
  (fp16/bf16 under autocast are upcast: all loss math runs in float32);
* ``target``: a label map ``(B, 1, *spatial)`` (or ``(B, *spatial)``) of integer class indices, or a
  one-hot / soft target ``(B, C, *spatial)``. With ``C == 1`` the task is binary and the target is a
  0/1 mask.

:func:`prepare` turns both into a :class:`Prepared` bundle. Binary tasks (``C == 1`` with sigmoid) are
expanded to two channels ``[background, foreground]`` by prepending a zero logit, because
``softmax([0, x]) = [1 - sigmoid(x), sigmoid(x)]`` exactly; every softmax loss therefore also covers the
binary sigmoid case without a second implementation. :attr:`Prepared.binary` tells region losses to
score only the foreground channel, as MONAI does for ``C == 1``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Prepared",
    "prepare",
    "check_logits",
    "float32_math",
    "float32_loss",
    "reduce_voxels",
    "reduce_classes",
    "reduce_voxel_terms",
    "none_shape",
    "NONE_SHAPES",
]

REDUCTIONS = ("mean", "sum", "none")


def float32_math(device_type: str = "cuda"):
    """Context manager that disables autocast on ``device_type`` so loss math runs in float32.

    nnU-Net trains under fp16 autocast; losses take ``log`` of probabilities near 0 and must not.
    """
    return torch.autocast(device_type=device_type, enabled=False)


def float32_loss(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Decorator: run a loss function with autocast disabled on the device of its first argument."""

    @functools.wraps(fn)
    def wrapper(logits, *args, **kwargs):
        device_type = logits.device.type if isinstance(logits, Tensor) else "cpu"
        with float32_math(device_type):
            return fn(logits, *args, **kwargs)

    return wrapper


def check_logits(logits: Tensor, name: str = "logits", check_finite: bool = True) -> None:
    """Raise ``ValueError`` naming ``name`` unless it is a float ``(B, C, *spatial)`` tensor, 2D or 3D."""
    if not isinstance(logits, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim not in (4, 5):
        raise ValueError(
            f"{name} must have shape (B, C, H, W) or (B, C, D, H, W), got {tuple(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of raw scores, got dtype {logits.dtype}")
    if logits.shape[0] == 0:
        raise ValueError(f"{name} has an empty batch (B = 0, shape {tuple(logits.shape)}): nothing to score")
    if logits.numel() == 0:
        raise ValueError(f"{name} has no channels or an empty spatial axis, shape {tuple(logits.shape)}")
    if check_finite and not bool(torch.isfinite(logits).all()):
        raise ValueError(f"{name} contains NaN or Inf values")


@dataclass
class Prepared:
    """Loss inputs in one convention: float32 ``(B, K, *spatial)`` tensors, K classes after expansion.

    Attributes:
        logits: float32 logits; for binary tasks ``[0, x]`` (two channels).
        onehot: float32 target, one-hot (or soft) ``(B, K, *spatial)``; zero at ignored voxels.
        labels: ``(B, *spatial)`` int64 class indices (ignored voxels set to 0), or ``None`` when the target
            was soft/multi-label and has no single class per voxel.
        valid: ``(B, *spatial)`` bool mask of voxels that count, or ``None`` when all count.
        binary: the task was binary (``C == 1``); region losses score channel 1 only.
        activation: ``"softmax"``, ``"sigmoid"`` (multi-label, channels independent) or ``"none"``
            (inputs are already probabilities).
    """

    logits: Tensor
    onehot: Tensor
    labels: Tensor | None
    valid: Tensor | None
    binary: bool
    activation: str

    # cached by hand, not functools.cached_property: on Python < 3.12 that takes an RLock, which
    # torch.compile cannot trace (a graph break in every loss)
    @property
    def probs(self) -> Tensor:
        """Class probabilities ``z`` (softmax over channels, or per-channel sigmoid); computed once."""
        cached = self.__dict__.get("_probs")
        if cached is None:
            if self.activation == "softmax":
                cached = torch.softmax(self.logits, dim=1)
            elif self.activation == "sigmoid":
                cached = torch.sigmoid(self.logits)
            else:
                cached = self.logits
            self.__dict__["_probs"] = cached
        return cached

    @property
    def log_probs(self) -> Tensor:
        """``log z`` computed stably (``log_softmax`` / ``logsigmoid``, never ``log(softmax)``); once."""
        cached = self.__dict__.get("_log_probs")
        if cached is None:
            if self.activation == "softmax":
                cached = F.log_softmax(self.logits, dim=1)
            elif self.activation == "sigmoid":
                cached = F.logsigmoid(self.logits)
            else:
                cached = torch.log(self.logits.clamp_min(torch.finfo(torch.float32).tiny))
            self.__dict__["_log_probs"] = cached
        return cached

    @property
    def num_classes(self) -> int:
        return self.logits.shape[1]

    @property
    def multilabel(self) -> bool:
        """Per-channel sigmoid over ``C > 1`` channels (nnU-Net regions): each channel is its own binary
        problem. Binary ``C == 1`` tasks are expanded to the two-class softmax and are not multi-label."""
        return self.activation == "sigmoid"

    @property
    def valid_float(self) -> Tensor | None:
        """``valid`` as ``(B, 1, *spatial)`` float, for broadcasting against ``(B, K, …)`` tensors."""
        return None if self.valid is None else self.valid.unsqueeze(1).float()

    def class_channels(self, include_background: bool) -> slice:
        """Channels a region loss scores: foreground only for binary tasks, else all or ``1:``."""
        if self.binary:
            return slice(1, 2)
        return slice(0, None) if include_background else slice(1, None)


def _resolve_activation(num_channels: int, softmax: bool | None, sigmoid: bool | None) -> str:
    if softmax and sigmoid:
        raise ValueError("softmax and sigmoid are mutually exclusive; set at most one of them to True")
    if softmax:
        if num_channels == 1:
            # MONAI warns and ignores the flag; the one channel is the binary task's sigmoid logit
            warnings.warn(
                "single channel prediction, `softmax=True` ignored: the channel is read as a binary "
                "sigmoid logit",
                stacklevel=5,
            )
            return "sigmoid"
        return "softmax"
    if sigmoid:
        return "sigmoid"
    if softmax is False and sigmoid is False:
        return "none"
    return "sigmoid" if num_channels == 1 else "softmax"


def prepare(
    logits: Tensor,
    target: Tensor,
    *,
    softmax: bool | None = None,
    sigmoid: bool | None = None,
    to_onehot_y: bool | None = None,
    ignore_index: int | None = None,
    check_finite: bool = True,
) -> Prepared:
    """Validate ``logits``/``target`` and bring them to one convention (see module docstring).

    Args:
        logits: ``(B, C, *spatial)`` raw scores (or probabilities with ``softmax=sigmoid=False``).
        target: label map ``(B, 1, *spatial)`` / ``(B, *spatial)`` or one-hot ``(B, C, *spatial)``.
        softmax, sigmoid: activation; ``None`` for both picks softmax for ``C > 1``, sigmoid for ``C == 1``.
            ``softmax=False, sigmoid=False`` means the inputs already are probabilities.
        to_onehot_y: ``True`` the target is a label map, ``False`` it is one-hot; ``None`` decides by its
            channel count.
        ignore_index: label value whose voxels do not count (label maps only), e.g. nnU-Net's ignore label.
        check_finite: raise on NaN/Inf logits (one reduction over the tensor).

    Raises:
        ValueError: naming ``logits`` or ``target`` when shapes, dtypes, values or label ranges are wrong.
    """
    check_logits(logits, "logits", check_finite)
    if not isinstance(target, Tensor):
        raise ValueError(f"target must be a torch.Tensor, got {type(target).__name__}")
    b, c = logits.shape[:2]
    spatial = tuple(logits.shape[2:])
    if target.ndim == logits.ndim - 1:
        target = target.unsqueeze(1)
    if target.ndim != logits.ndim or target.shape[0] != b or tuple(target.shape[2:]) != spatial:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}: expected "
            f"(B, 1, *spatial) label map or (B, C, *spatial) one-hot with B={b}, spatial={spatial}"
        )
    activation = _resolve_activation(c, softmax, sigmoid)
    if activation == "none" and c == 1:
        raise ValueError("probability inputs (softmax=sigmoid=False) need C > 1 channels")
    binary = c == 1 and activation == "sigmoid"
    is_label_map = target.shape[1] == 1 and (c > 1 or binary) if to_onehot_y is None else bool(to_onehot_y)
    if binary:
        is_label_map = True  # a (B,1) 0/1 mask is a label map with two classes
    num_classes = 2 if binary else c

    with float32_math(logits.device.type):
        x = logits.float()
        if binary:
            x = torch.cat([torch.zeros_like(x), x], dim=1)
        if is_label_map:
            if target.shape[1] != 1:
                raise ValueError(f"target must have 1 channel as a label map, got {tuple(target.shape)}")
            if target.is_floating_point():
                if not bool(torch.isfinite(target).all()) or bool((target != target.round()).any()):
                    raise ValueError("target label map must hold integer class indices")
            labels = target[:, 0].long()
            valid = None
            if ignore_index is not None:
                valid = labels != ignore_index
                labels = torch.where(valid, labels, torch.zeros_like(labels))
            if labels.numel():
                lo, hi = int(labels.min()), int(labels.max())
                if lo < 0 or hi >= num_classes:
                    raise ValueError(
                        f"target labels must lie in [0, {num_classes - 1}] (C={c} logits channels"
                        f"{', binary' if binary else ''}), found values in [{lo}, {hi}]"
                        + (f"; ignore_index={ignore_index}" if ignore_index is not None else "")
                    )
            onehot = F.one_hot(labels, num_classes).movedim(-1, 1).float()
            if valid is not None:
                onehot = onehot * valid.unsqueeze(1)
        else:
            if target.shape[1] != c:
                raise ValueError(
                    f"one-hot target must have C={c} channels like logits, got shape {tuple(target.shape)}"
                )
            if ignore_index is not None:
                raise ValueError("ignore_index needs a label-map target (B, 1, *spatial), not one-hot")
            onehot = target.float()
            if not bool(torch.isfinite(onehot).all()) or bool(((onehot < 0) | (onehot > 1)).any()):
                raise ValueError("one-hot target values must lie in [0, 1]")
            valid = None
            labels = onehot.argmax(1) if activation == "softmax" else None
    # the expanded binary logits [0, x] are exact under softmax
    return Prepared(x, onehot, labels, valid, binary, "softmax" if binary else activation)


def reduce_voxels(loss_map: Tensor, valid: Tensor | None, reduction: str) -> Tensor:
    """Reduce a per-voxel loss ``(B, *spatial)``: mean over valid voxels, sum, or the map (0 where ignored).

    With every voxel ignored the mean is 0 (with a gradient path), never NaN.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if valid is not None:
        loss_map = torch.where(valid, loss_map, torch.zeros_like(loss_map))
    if reduction == "none":
        return loss_map
    if reduction == "sum":
        return loss_map.sum()
    n = loss_map.numel() if valid is None else valid.sum()
    return loss_map.sum() / (n.clamp_min(1) if isinstance(n, Tensor) else max(n, 1))


def reduce_classes(per_class: Tensor, reduction: str, shape: tuple[int, ...] | None = None) -> Tensor:
    """Reduce a per-(image, class), per-class or per-image region loss as MONAI does.

    ``none`` returns the values, viewed as ``shape`` when given (see :func:`none_shape`).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if reduction == "mean":
        return per_class.mean()
    if reduction == "sum":
        return per_class.sum()
    return per_class if shape is None else per_class.reshape(shape)


# ``reduction="none"`` shapes, ``nd`` spatial dims, ``C'`` the scored channels. The MONAI styles copy the
# shapes of MONAI's own loss of that family exactly (tested); the others follow the same rule: values
# that broadcast against the input ``(B, C, *spatial)``.
NONE_SHAPES: dict[str, str] = {
    "dice": "(B, C', 1, …); batch: (C', 1, …) — MONAI DiceLoss",
    "gdl": "(B, 1, 1, …); batch: (1, 1, …) — MONAI GeneralizedDiceLoss",
    "tversky": "(B, C'); batch: (C',) — MONAI TverskyLoss",
    "region": "(B, C', 1, …); batch: (1, C', 1, …) — MONAI HausdorffDTLoss",
    "image": "(B, 1, 1, …), one value per image",
    "voxel": "(B, C', *spatial) per-class terms (their sum over C' is the voxel's loss) — MONAI FocalLoss",
    "selected": "(N_kept,), the selected voxels' losses",
}


def none_shape(style: str, values: Tensor, spatial_dims: int, batch: bool = False) -> tuple[int, ...]:
    """The ``reduction="none"`` shape (:data:`NONE_SHAPES`) of region values: ``(B, C')`` or ``(C',)``
    with ``batch``, for per-image styles ``(B,)`` or ``(1,)`` with ``batch``."""
    ones = (1,) * spatial_dims
    if style == "tversky":
        return tuple(values.shape)
    if style in ("gdl", "image"):
        return (1,) + ones if batch and style == "gdl" else (values.shape[0], 1) + ones
    if not batch:
        return tuple(values.shape) + ones
    if style == "dice":
        return tuple(values.shape) + ones
    if style == "region":
        return (1,) + tuple(values.shape) + ones
    raise ValueError(f"unknown none-shape style {style!r}")


def reduce_voxel_terms(
    terms: Tensor, p: Prepared, reduction: str, channels: slice | None = None, valid: Tensor | None = None
) -> Tensor:
    """Reduce per-class, per-voxel terms ``(B, K, *spatial)`` whose class sum is the voxel's loss.

    ``mean``/``sum``: the class sum reduced over the valid voxels (:func:`reduce_voxels`). ``none``: the
    terms ``(B, C', *spatial)`` of the scored ``channels`` (zero at ignored voxels), as MONAI's
    ``FocalLoss``; binary tasks give one channel holding the whole binary loss (both expanded channels).
    ``valid`` defaults to ``p.valid``.
    """
    valid = p.valid if valid is None else valid
    if reduction != "none":
        return reduce_voxels(terms.sum(1), valid, reduction)
    if p.binary:
        terms = terms.sum(1, keepdim=True)
    elif channels is not None:
        terms = terms[:, channels]
    if valid is not None:
        terms = torch.where(valid.unsqueeze(1), terms, torch.zeros_like(terms))
    return terms
