"""Compound losses: Dice + CE (nnU-Net / MONAI), log-Dice + CE, Combo, exponential logarithmic, and
``compound``, a weighted sum of any registered losses sharing one prepared input."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from segbalance.monai_losses.base import SegLoss
from segbalance.monai_losses.cross_entropy import voxel_cross_entropy
from segbalance.monai_losses.dice import LogDiceLoss, SoftDiceLoss, region_stats, soft_dice
from segbalance.monai_losses.distributed import all_reduce_sum
from segbalance.monai_losses.focal import log_one_minus_softmax
from segbalance.monai_losses.inputs import Prepared, float32_math, none_shape, reduce_voxels
from segbalance.monai_losses.monai_dice import DiceCELoss  # noqa: F401  (MONAI's classes, re-exported)
from segbalance.monai_losses.registry import loss_class, register

__all__ = [
    "DiceCELoss",  # MONAI's classes, from .monai_dice
    "DiceCrossEntropyLoss",
    "LogDiceCELoss",
    "ComboLoss",
    "ExpLogLoss",
    "CompoundLoss",
    "per_image_voxel_mean",
    "log_one_minus_probs",
]

_CONVENTIONS = ("to_onehot_y", "softmax", "sigmoid", "ignore_index", "check_finite")


def per_image_voxel_mean(loss_map: Tensor, valid: Tensor | None) -> Tensor:
    """Mean of a ``(B, *spatial)`` map over each image's valid voxels, ``(B,)`` (0 if all are ignored)."""
    b = loss_map.shape[0]
    if valid is None:
        return loss_map.reshape(b, -1).mean(1)
    v = valid.reshape(b, -1)
    total = torch.where(v, loss_map.reshape(b, -1), torch.zeros_like(loss_map.reshape(b, -1))).sum(1)
    return total / v.sum(1).clamp_min(1)


def _combine(region: Tensor, voxel_map: Tensor, p: Prepared, w_region: float, w_voxel: float, reduction: str):
    """``w_region·region + w_voxel·voxel term``: means for ``"mean"``; per-image values ``(B, 1, 1, …)``
    for ``"none"``, their sum for ``"sum"``."""
    if reduction == "mean":
        return w_region * region.mean() + w_voxel * reduce_voxels(voxel_map, p.valid, "mean")
    b = p.logits.shape[0]
    if region.ndim == 0 or region.shape[0] != b:
        raise ValueError(f"reduction={reduction!r} needs per-image region values: set batch=False")
    per_image = w_region * region.reshape(b, -1).mean(1) + w_voxel * per_image_voxel_mean(voxel_map, p.valid)
    if reduction == "sum":
        return per_image.sum()
    return per_image.reshape(none_shape("image", per_image, p.logits.ndim - 2))


@register("dice_ce")
class DiceCrossEntropyLoss(SegLoss):
    """``L = lambda_dice·L_Dice + lambda_ce·L_CE`` (Isensee et al., nnU-Net; Ma 2020, §5), both weights 1.

    ``L_Dice`` is :class:`~segbalance.monai_losses.dice.DiceLoss` with this module's ``include_background``,
    ``batch``, ``smooth_nr``, ``smooth_dr``, ``squared_pred``; ``L_CE`` is cross-entropy over all classes,
    mean over the voxels that count. Equal to MONAI ``DiceCELoss(softmax=True, to_onehot_y=True,
    lambda_dice=…, lambda_ce=…)`` configured alike, ``include_background`` included (it applies to the Dice
    term; CE is over all classes, as in MONAI). ``reduction="none"`` gives per-image values ``(B, 1, 1, …)``
    (mean Dice loss over classes + the image's mean CE; needs ``batch=False``); MONAI's ``DiceCELoss`` has
    no ``"none"``.

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 2, 1, 2)
        >>> target = torch.tensor([[[[1, 0]]]])
        >>> round(float(DiceCrossEntropyLoss(smooth_nr=0, smooth_dr=0)(logits, target)), 4)  # 0.5 + ln 2
        1.1931
    """

    region_cls: type[SoftDiceLoss] = SoftDiceLoss
    background_scope = "dice_term"
    none_style = "image"
    ddp_statistics = "soft TP/FP/FN sums (`batch=True`)"

    def __init__(
        self,
        *,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        batch: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        squared_pred: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if lambda_dice < 0 or lambda_ce < 0:
            raise ValueError(f"lambda_dice and lambda_ce must be >= 0, got {lambda_dice}, {lambda_ce}")
        self.lambda_dice = float(lambda_dice)
        self.lambda_ce = float(lambda_ce)
        self.batch = batch
        self.region = self.region_cls(
            **self.convention_kwargs(),
            include_background=self.include_background,
            batch=batch,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            squared_pred=squared_pred,
            reduction="none",
        )

    def forward_prepared(self, p: Prepared) -> Tensor:
        region = self.region.per_class(p)
        return _combine(region, voxel_cross_entropy(p), p, self.lambda_dice, self.lambda_ce, self.reduction)


@register("logdice_ce")
class LogDiceCELoss(DiceCrossEntropyLoss):
    """``L = lambda_dice·(−ln Dice) + lambda_ce·L_CE`` (log-Dice variant compared in Liu et al. 2021),
    weights 1.

    As :class:`DiceCrossEntropyLoss` with :class:`~segbalance.monai_losses.dice.LogDiceLoss` as the region
    term.

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 2, 1, 2)
        >>> target = torch.tensor([[[[1, 0]]]])
        >>> round(float(LogDiceCELoss(smooth_nr=0, smooth_dr=0)(logits, target)), 4)  # ln 2 + ln 2
        1.3863
    """

    region_cls = LogDiceLoss


def log_one_minus_probs(p: Prepared) -> Tensor:
    """``log(1 − z)`` per channel, stably: :func:`~.focal.log_one_minus_softmax` for softmax inputs,
    ``logsigmoid(−x)`` for sigmoid ones, a clamped ``log`` for probabilities."""
    if p.activation == "sigmoid":
        return torch.nn.functional.logsigmoid(-p.logits)
    if p.activation == "none":
        return torch.log((1.0 - p.logits).clamp_min(torch.finfo(torch.float32).tiny))
    return log_one_minus_softmax(p.logits, p.log_probs)


@register("combo")
class ComboLoss(SegLoss):
    """Combo loss (Taghanaki et al. 2019; Ma 2020, Eq. 15), ``alpha = beta = 0.5``:

    ``L = α·(−(1/N) Σ_v mean_c [β g ln z + (1 − β)(1 − g) ln(1 − z)]) − (1 − α)·mean_c Dice_c``

    over the scored channels (``include_background``; binary tasks: the foreground channel, which makes the
    first term the (β-weighted) binary cross-entropy). ``β > 0.5`` penalises false negatives more. Both
    terms of the cross-entropy are penalties (``−ln``): the public Keras implementation applies the
    negative-class term with the wrong sign, rewarding false positives; we follow the paper. ``Dice_c`` is
    the soft Dice with ``smooth_nr``/``smooth_dr`` per image (or per batch with ``batch=True``). The loss
    is negative: its minimum is ``−(1 − α)`` at a perfect prediction. ``ln(1 − z)`` is computed stably from
    the logits.

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 2, 1, 2)
        >>> target = torch.tensor([[[[1, 0]]]])
        >>> round(float(ComboLoss(smooth_nr=0, smooth_dr=0)(logits, target)), 4)  # 0.5·0.5·ln 2 − 0.5·0.5
        -0.0767
    """

    none_style = "image"
    ddp_statistics = "soft TP/FP/FN sums (`batch=True`)"

    def __init__(
        self,
        *,
        alpha: float = 0.5,
        beta: float = 0.5,
        batch: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        self.alpha, self.beta, self.batch = float(alpha), float(beta), batch
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)

    def forward_prepared(self, p: Prepared) -> Tensor:
        ch = p.class_channels(self.include_background)
        g = p.onehot[:, ch]
        pos = self.beta * g * p.log_probs[:, ch]
        neg = (1.0 - self.beta) * (1.0 - g) * log_one_minus_probs(p)[:, ch]
        bce = -(pos + neg)
        dice = soft_dice(region_stats(p, self.include_background, self.batch), self.smooth_nr, self.smooth_dr)
        return _combine(-dice, bce.mean(1), p, 1.0 - self.alpha, self.alpha, self.reduction)


@register("explog")
class ExpLogLoss(SegLoss):
    """Exponential logarithmic loss (Wong et al., MICCAI 2018; Ma 2020, Eq. 16):

    ``L = w_dice·E_c[(−ln Dice_c)^γ_dice] + w_ce·E_v[w_l (−ln z_{v,l})^γ_ce]``, ``l`` the voxel's label,
    ``w_l = ((Σ_k f_k) / f_l)^0.5`` with ``f_k`` the voxel count of label ``k``. Defaults ``w_dice = 0.8``,
    ``w_ce = 0.2``, ``γ_dice = γ_ce = 0.3`` (Wong et al.). Wong et al. take ``f_k`` over the training set:
    pass ``class_frequencies`` (length C, any scale) for that; by default they are counted in the current
    batch's valid voxels (absent labels never weigh a voxel, so their infinite weight is never used).
    ``Dice_c`` is the soft Dice with ``smooth_nr = smooth_dr = 1`` (Wong et al.'s pseudo-count ε = 1) per
    image (``batch=False``) or batch. The bases ``−ln Dice`` and ``−ln z`` are clamped at ``1e-6``, where
    ``x^0.3`` has an infinite slope.

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 2, 1, 2)
        >>> target = torch.tensor([[[[1, 0]]]])  # Dice 0.5 per class, z = 0.5, f = (1, 1): w = sqrt(2)
        >>> value = ExpLogLoss(smooth_nr=0, smooth_dr=0)(logits, target)
        >>> round(float(value), 4)  # (0.8 + 0.2·sqrt 2)·(ln 2)^0.3
        0.9701
    """

    background_scope = "dice_term"
    none_style = "image"
    ddp_statistics = "label counts (detached); soft TP/FP/FN sums (`batch=True`)"

    def __init__(
        self,
        *,
        w_dice: float = 0.8,
        w_ce: float = 0.2,
        gamma_dice: float = 0.3,
        gamma_ce: float = 0.3,
        class_frequencies: list[float] | Tensor | None = None,
        batch: bool = False,
        smooth_nr: float = 1.0,
        smooth_dr: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if gamma_dice <= 0 or gamma_ce <= 0:
            raise ValueError(f"gamma_dice and gamma_ce must be > 0, got {gamma_dice}, {gamma_ce}")
        self.w_dice, self.w_ce = float(w_dice), float(w_ce)
        self.gamma_dice, self.gamma_ce = float(gamma_dice), float(gamma_ce)
        self.batch = batch
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)
        if class_frequencies is not None:
            freq = torch.as_tensor(class_frequencies, dtype=torch.float32)
            if freq.ndim != 1 or not bool((freq > 0).all()):
                raise ValueError("class_frequencies must be a 1D sequence of positive numbers")
            class_frequencies = freq
        self.class_frequencies = class_frequencies

    def class_weights(self, p: Prepared) -> Tensor:
        """``w_l = (Σ f / f_l)^0.5`` of length K (0 where ``f_l = 0``), no gradient."""
        if self.class_frequencies is not None:
            f = self.class_frequencies.to(p.logits.device)
            if f.numel() != p.num_classes:
                raise ValueError(
                    f"class_frequencies has {f.numel()} entries but the logits have {p.num_classes} classes"
                )
        else:  # batch counts, summed over DDP ranks
            f = all_reduce_sum(p.onehot.detach().transpose(0, 1).reshape(p.num_classes, -1).sum(1))
        w = torch.sqrt(f.sum() / f)
        return torch.where(f > 0, w, torch.zeros_like(w))

    def forward_prepared(self, p: Prepared) -> Tensor:
        dice = soft_dice(region_stats(p, self.include_background, self.batch), self.smooth_nr, self.smooth_dr)
        dice_term = (-torch.log(dice.clamp_min(1e-30))).clamp_min(1e-6) ** self.gamma_dice
        w = self.class_weights(p).view(1, -1, *([1] * (p.logits.ndim - 2)))
        ce = (p.onehot * w * (-p.log_probs).clamp_min(1e-6) ** self.gamma_ce).sum(1)
        return _combine(dice_term, ce, p, self.w_dice, self.w_ce, self.reduction)


def _term_spec(name: str, spec) -> tuple[float, dict]:
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"weight", "kwargs"}
        if unknown:
            raise ValueError(f"terms[{name!r}] has unknown keys {sorted(unknown)}; use 'weight' and 'kwargs'")
        return float(spec.get("weight", 1.0)), dict(spec.get("kwargs") or {})
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return float(spec), {}
    raise ValueError(f"terms[{name!r}] must be a weight or {{'weight': w, 'kwargs': {{...}}}}, got {spec!r}")


@register("compound")
class CompoundLoss(SegLoss):
    """Weighted sum ``L = Σ_t w_t L_t`` of registered losses, e.g. ``terms={"dfl": 1.0, "dice": 1.0}``.

    ``terms`` maps a registered name to a weight or to ``{"weight": w, "kwargs": {...}}`` (the term's own
    constructor arguments). This module's convention flags (``to_onehot_y``, ``softmax``, ``sigmoid``,
    ``ignore_index``, ``check_finite``) are passed to every term unless its ``kwargs`` override them;
    ``include_background`` only when given (default ``None``: each term keeps its own default, e.g. the
    boundary loss scores foreground classes only). When all terms share the convention flags the inputs
    are prepared once and each term's ``forward_prepared`` runs on them. Extra keyword arguments of
    ``forward`` (e.g. ``dist=`` for boundary losses) go to the terms whose ``forward_prepared`` accepts them.

    ``reduction="mean"`` sums the terms' mean values; ``"none"`` gives per-image values ``(B, 1, 1, …)``,
    each term's ``"none"`` output averaged per image (per-voxel terms over their voxels; needs per-image
    region terms, not ``batch=True``); ``"sum"`` their sum.

    Example:
        >>> import torch
        >>> loss = CompoundLoss(terms={"ce": 1.0, "dice": {"weight": 0.5, "kwargs": {"smooth_nr": 0}}})
        >>> logits, target = torch.zeros(1, 2, 1, 2), torch.tensor([[[[1, 0]]]])
        >>> round(float(loss(logits, target)), 4)  # ln 2 + 0.5 · 0.5
        0.9431
    """

    background_scope = "terms"
    none_style = "image"

    def __init__(self, *, terms: Mapping, include_background: bool | None = None, **kwargs) -> None:
        super().__init__(
            include_background=True if include_background is None else include_background, **kwargs
        )
        if not isinstance(terms, Mapping) or not terms:
            raise ValueError("terms must be a non-empty mapping: loss name -> weight or {'weight', 'kwargs'}")
        shared = self.convention_kwargs()
        if include_background is not None:
            shared["include_background"] = include_background
        self.weights: dict[str, float] = {}
        self.terms = nn.ModuleDict()
        for name, spec in terms.items():
            if name == "compound":
                raise ValueError("terms cannot contain 'compound' itself")
            weight, term_kwargs = _term_spec(name, spec)
            cls = loss_class(name)
            own = {**shared, **term_kwargs, "reduction": "mean" if self.reduction == "mean" else "none"}
            try:
                self.terms[name] = cls(**own)
            except TypeError as exc:
                raise ValueError(f"bad kwargs for term {name!r} ({cls.__name__}): {exc}") from exc
            self.weights[name] = weight
        self._extra = {
            name: set(inspect.signature(term.forward_prepared).parameters) - {"p"}
            for name, term in self.terms.items()
        }

    def _shares_conventions(self) -> bool:
        mine = self.convention_kwargs()
        return all(
            isinstance(t, SegLoss) and all(getattr(t, k) == mine[k] for k in _CONVENTIONS)
            for t in self.terms.values()
        )

    def _per_image(self, value: Tensor, p: Prepared | None, logits: Tensor, target, name: str) -> Tensor:
        term = self.terms[name]
        try:
            return term.per_image(value, term.prepare(logits, target) if p is None else p)
        except ValueError as exc:
            raise ValueError(
                f"reduction={self.reduction!r} needs per-image values from term {name!r}: {exc}"
            ) from exc

    def forward(self, logits: Tensor, target: Tensor, **kwargs) -> Tensor:
        """Weighted sum of the terms; ``kwargs`` go to the terms that accept them."""
        unknown = set(kwargs) - set().union(*self._extra.values())
        if unknown:
            raise ValueError(f"no term of this compound loss accepts the keyword arguments {sorted(unknown)}")
        with float32_math(logits.device.type if isinstance(logits, Tensor) else "cpu"):
            p = self.prepare(logits, target) if self._shares_conventions() else None
            total = None
            for name, term in self.terms.items():
                extra = {k: v for k, v in kwargs.items() if k in self._extra[name]}
                value = term.forward_prepared(p, **extra) if p is not None else term(logits, target, **extra)
                if self.reduction != "mean":
                    value = self._per_image(value, p, logits, target, name)
                total = self.weights[name] * value if total is None else total + self.weights[name] * value
            return total.sum() if self.reduction == "sum" else self._image_shape(total, logits)

    def forward_prepared(self, p: Prepared, **kwargs) -> Tensor:
        if not self._shares_conventions():
            raise ValueError("forward_prepared needs terms that share this module's convention flags")
        total = None
        for name, term in self.terms.items():
            extra = {k: v for k, v in kwargs.items() if k in self._extra[name]}
            value = term.forward_prepared(p, **extra)
            if self.reduction != "mean":
                value = self._per_image(value, p, p.logits, None, name)
            total = self.weights[name] * value if total is None else total + self.weights[name] * value
        return total.sum() if self.reduction == "sum" else self._image_shape(total, p.logits)

    def _image_shape(self, total: Tensor, logits: Tensor) -> Tensor:
        if self.reduction == "mean":
            return total
        return total.reshape(none_shape("image", total, logits.ndim - 2))
