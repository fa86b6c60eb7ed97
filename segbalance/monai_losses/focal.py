"""Focal-type per-voxel losses of the Dual Focal Loss paper (Hossain et al. 2021): Focal, Dual CE, Dual Focal.

Notation (Hossain et al. 2021, §3): ``u`` logits, ``z = softmax(u)`` probabilities, ``y`` one-hot target,
``i`` the class, ``n`` the voxel. Each loss is summed over classes per voxel and averaged over the
valid voxels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from segbalance.monai_losses.arguments import check_number
from segbalance.monai_losses.cross_entropy import _VoxelLoss
from segbalance.monai_losses.inputs import Prepared
from segbalance.monai_losses.monai_focal import FocalLoss  # noqa: F401  (MONAI's classes, re-exported)
from segbalance.monai_losses.registry import register

__all__ = [
    "FocalLoss",  # MONAI's classes, from .monai_focal
    "SoftmaxFocalLoss",
    "DualCrossEntropyLoss",
    "DualFocalLoss",
    "focal_loss",
    "dual_cross_entropy",
    "dual_focal_loss",
    "log_one_minus_softmax",
    "focal_terms",
    "dual_cross_entropy_terms",
    "dual_focal_terms",
    "sigmoid_focal_terms",
    "sigmoid_dual_focal_terms",
]


def _class_vector(
    value: float | Sequence[float] | Tensor | None, num_classes: int, name: str
) -> Tensor | None:
    """``None``, a scalar (same for all classes) or a per-class sequence → ``(K,)`` float32 tensor."""
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(num_classes)
    if t.numel() != num_classes:
        raise ValueError(
            f"{name} must be a scalar or have one value per class ({num_classes}), got {t.numel()}"
        )
    if bool((t < 0).any()) or not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} values must be finite and non-negative, got {t.tolist()}")
    return t


def _per_class(t: Tensor, ref: Tensor) -> Tensor:
    return t.to(ref).view(1, -1, *([1] * (ref.ndim - 2)))


def log_one_minus_softmax(logits: Tensor, log_probs: Tensor | None = None) -> Tensor:
    """``log(1 − softmax(u)_i)`` for every class, exact and finite for saturated logits.

    For the arg-max class (the only one that can have ``z > 1/2``) it is ``logsumexp_{j≠i} u_j − logsumexp u``
    (no cancellation); for the others ``log1p(−exp(log z_i))`` with ``z_i ≤ 1/2`` is accurate. Both branches
    are kept finite so ``torch.where`` never back-propagates ``0·inf``. Needs ``C ≥ 2``.
    """
    if log_probs is None:
        log_probs = torch.log_softmax(logits, dim=1)
    is_max = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, logits.argmax(1, keepdim=True), True)
    lse_all = torch.logsumexp(logits, dim=1, keepdim=True)
    lse_rest = torch.logsumexp(logits.masked_fill(is_max, float("-inf")), dim=1, keepdim=True)
    safe_lp = torch.where(is_max, torch.full_like(log_probs, -1.0), log_probs).clamp_max(-math.log(2.0))
    return torch.where(is_max, (lse_rest - lse_all).expand_as(logits), torch.log1p(-torch.exp(safe_lp)))


def focal_terms(logits: Tensor, a: Tensor, gamma: float) -> Tensor:
    """Per-class softmax focal terms ``−a_i (1 − z_i)^γ log z_i`` ``(B, K, *spatial)`` by plain autograd
    (``a = α ⊙ y``); the reference of :class:`_FocalMap` and the ``reduction="none"`` output."""
    lz = torch.log_softmax(logits, dim=1)
    one_minus = (-torch.expm1(lz)).clamp_min(0.0)
    focal = torch.ones_like(one_minus) if gamma == 0 else one_minus.clamp_min(1e-30) ** gamma
    return -(a * focal * lz)


def dual_cross_entropy_terms(logits: Tensor, y: Tensor, alpha: float, beta: float) -> Tensor:
    """Per-class Dual CE terms ``−y_i log z_i + β (1 − y_i) log(α + z_i)`` by plain autograd."""
    lz = torch.log_softmax(logits, dim=1)
    return -y * lz + beta * (1.0 - y) * torch.log(alpha + lz.exp())


def dual_focal_terms(
    logits: Tensor, y: Tensor, alpha: float, beta: float, gamma: float, rho: float
) -> Tensor:
    """Per-class Dual Focal terms ``−y_i log z_i − β (1 − y_i) log(ρ − z_i) + α |y_i − z_i|^γ`` by plain
    autograd (``log(1 − z)`` by :func:`log_one_minus_softmax` for ``ρ = 1``)."""
    lz = torch.log_softmax(logits, dim=1)
    z = lz.exp()
    log_neg = log_one_minus_softmax(logits, lz) if rho == 1.0 else torch.log(rho - z)
    err = (y - z).abs()
    if gamma < 1:
        err = err.clamp_min(1e-12)
    return -y * lz - beta * (1.0 - y) * log_neg + alpha * err**gamma


def sigmoid_focal_terms(logits: Tensor, y: Tensor, gamma: float, alpha: Tensor | None = None) -> Tensor:
    """Per-channel sigmoid focal terms ``−[a₁ y (1 − σ)^γ log σ + a₀ (1 − y) σ^γ log(1 − σ)]`` ``(B, R, …)``
    of a multi-label input (Lin et al.'s binary focal loss per channel), ``σ = sigmoid(x)``.

    ``log σ`` and ``log(1 − σ)`` are ``logsigmoid(±x)``; the modulating factors are ``exp(γ·logsigmoid(∓x))``
    (finite with a finite gradient for saturated logits, any ``γ ≥ 0``). ``alpha``: ``None`` or
    ``[a₀, a₁]`` (negative, positive) for every channel. Plain autograd (twice differentiable).
    """
    log_pos, log_neg = F.logsigmoid(logits), F.logsigmoid(-logits)
    pos, neg = y * log_pos, (1.0 - y) * log_neg
    if gamma != 0:
        pos, neg = pos * torch.exp(gamma * log_neg), neg * torch.exp(gamma * log_pos)
    if alpha is not None:
        a = alpha.to(logits)
        pos, neg = pos * a[1], neg * a[0]
    return -(pos + neg)


def sigmoid_dual_focal_terms(
    logits: Tensor, y: Tensor, alpha: float, beta: float, gamma: float, rho: float
) -> Tensor:
    """Per-channel Dual Focal terms of a multi-label input, ``z = σ(x)`` per channel (one-vs-rest):
    ``−y log z − β (1 − y) log(ρ − z) + α |y − z|^γ`` ``(B, R, …)``; ``log z`` and, for ``ρ = 1``,
    ``log(1 − z)`` from ``logsigmoid(±x)``. Plain autograd (twice differentiable)."""
    log_pos = F.logsigmoid(logits)
    z = torch.sigmoid(logits)
    log_neg = F.logsigmoid(-logits) if rho == 1.0 else torch.log(rho - z)
    err = (y - z).abs()
    if gamma < 1:
        err = err.clamp_min(1e-12)
    return -y * log_pos - beta * (1.0 - y) * log_neg + alpha * err**gamma


def _masked(t: Tensor, mask: Tensor | None) -> Tensor:
    return t if mask is None else t * _per_class(mask, t)


@register("focal", multilabel=True)
class SoftmaxFocalLoss(_VoxelLoss):
    """Softmax focal loss ``L = −(1/N) Σ_n Σ_i α_i y_{i,n} (1 − z_{i,n})^γ log z_{i,n}``.

    Hossain et al. 2021, Eq. 5 (Lin et al.); Ma 2020, Eq. 5. ``log z`` comes from ``log_softmax``.
    ``gamma=2`` (Lin et al.); ``alpha``: ``None`` (all 1), a scalar or one weight per class.

    Relation to MONAI: ``monai.losses.FocalLoss(use_softmax=True, to_onehot_y=True, gamma=γ, alpha=[α_i])``
    computes the same per-element terms but its ``reduction="mean"`` averages over ``B·C·voxels``
    elements, ours sums over the ``C`` classes and averages over voxels, so ours = ``C ×`` MONAI's.
    MONAI's scalar ``alpha`` means ``[1−α, α, …, α]``; ours means ``α`` for every class.
    ``reduction="none"`` gives MONAI's ``(B, C', *spatial)`` terms (here ours = MONAI's). With
    ``include_background=False`` class 0's term is dropped but the softmax stays over all ``C`` channels;
    MONAI drops channel 0 *before* its softmax, so the two agree only when the background logit is very
    negative (tested).

    Multi-label (``sigmoid=True`` with ``C > 1``, nnU-Net's regions): the sigmoid focal loss per channel,
    ``−[α₁ y (1 − σ)^γ log σ + α₀ (1 − y) σ^γ log(1 − σ)]`` (:func:`sigmoid_focal_terms`), mean over valid
    voxels and channels; ``alpha`` is then ``[α₀, α₁]`` (negative, positive) or a scalar for both. Equal to
    ``monai.losses.FocalLoss(use_softmax=False, gamma=γ)`` and to ``torchvision.ops.sigmoid_focal_loss``
    (their ``alpha=a`` is ours ``[1 − a, a]``) for 0/1 targets; each channel equals the binary ``C == 1``
    loss on it.

    Example:
        >>> import torch
        >>> loss = SoftmaxFocalLoss(gamma=0.0)  # γ = 0 is cross-entropy
        >>> round(float(loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long))), 4)
        0.6931
    """

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.gamma = check_number(type(self).__name__, "gamma", gamma, low=0)
        self.alpha = alpha

    def forward_prepared(self, p: Prepared) -> Tensor:
        if p.multilabel:
            alpha = _class_vector(self.alpha, 2, "alpha of a multi-label input ([negative, positive])")
            return self.reduce_multilabel(sigmoid_focal_terms(p.logits, p.onehot, self.gamma, alpha), p)
        alpha = _class_vector(self.alpha, p.num_classes, "alpha")
        y = p.onehot if alpha is None else p.onehot * _per_class(alpha, p.onehot)
        y = _masked(y, self.class_mask(p))
        if self.reduction == "none":
            return self.reduce_terms(focal_terms(p.logits, y, self.gamma), p)
        return self.reduce_terms(_FocalMap.apply(p.logits, y, self.gamma).unsqueeze(1), p)


class _FocalMap(torch.autograd.Function):
    """Per-voxel softmax focal loss ``−Σ_i a_i (1 − z_i)^γ log z_i`` (``a = α ⊙ y``) with its closed-form
    gradient, computed in the forward pass and saved alone (as :class:`_DualFocalMap`):

    ``∂L/∂u_j = h_j − z_j Σ_i h_i``, ``h_i = a_i [γ (1 − z_i)^{γ−1} z_i log z_i − (1 − z_i)^γ]``.

    ``1 − z`` is ``−expm1(log z)`` (accurate as ``z → 1``); for ``γ < 1`` it is clamped at 1e-30 inside
    ``(1 − z)^{γ−1}``, where the product with ``log z → 0`` vanishes, so no ``0·inf``.

    Once differentiable: a second derivative (``create_graph=True`` then ``grad`` again) raises instead of
    silently returning a wrong Hessian; use :func:`focal_terms` for higher derivatives.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, a: Tensor, gamma: float):
        lz = torch.log_softmax(logits, dim=1)
        one_minus = torch.expm1(lz).neg_().clamp_min_(0.0)
        if gamma == 2.0:
            focal = one_minus * one_minus
        elif gamma == 0.0:
            focal = torch.ones_like(one_minus)
        else:
            focal = one_minus.pow(gamma)
        loss_map = (a * focal * lz).sum(1).neg_()
        if not ctx.needs_input_grad[0]:
            return loss_map
        z = lz.exp()
        if gamma == 0.0:
            h = a.neg()
        else:
            slope = (
                one_minus.mul_(2.0)
                if gamma == 2.0
                else one_minus.clamp_min_(1e-30).pow_(gamma - 1).mul_(gamma)
            )
            h = slope.mul_(z).mul_(lz).sub_(focal).mul_(a)
        grad = h - z * h.sum(1, keepdim=True)
        ctx.save_for_backward(grad)
        return loss_map

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        (grad,) = ctx.saved_tensors
        return grad_output.unsqueeze(1) * grad, None, None


@register("dce")
class DualCrossEntropyLoss(_VoxelLoss):
    """Dual cross-entropy (Li et al.), Hossain et al. 2021, Eq. 4 exactly as printed (the paper's baseline):

    ``L_n = −Σ_i y_{i,n} log z_{i,n} + β Σ_i (1 − y_{i,n}) log(α + z_{i,n})``, mean over voxels.

    Defaults ``alpha = beta = 1`` (Hossain et al. 2021, §4 sets every parameter to 1). Note the second term
    *decreases* when a negative class's probability falls (the paper's criticism of DCE), so the loss can be
    negative.

    Example:
        >>> import torch
        >>> loss = DualCrossEntropyLoss()
        >>> v = loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long))
        >>> round(float(v), 4)  # log 2 + log 1.5
        1.0986
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.alpha = check_number(owner, "alpha (log(alpha + z) with z -> 0)", alpha, low=0, low_open=True)
        self.beta = check_number(owner, "beta", beta, low=0)

    def forward_prepared(self, p: Prepared) -> Tensor:
        mask = self.class_mask(p)
        if self.reduction == "none":
            terms = _masked(dual_cross_entropy_terms(p.logits, p.onehot, self.alpha, self.beta), mask)
            return self.reduce_terms(terms, p)
        loss_map = _DualCrossEntropyMap.apply(p.logits, p.onehot, mask, self.alpha, self.beta)
        return self.reduce_terms(loss_map.unsqueeze(1), p)


class _DualCrossEntropyMap(torch.autograd.Function):
    """Per-voxel Dual CE ``Σ_i [−y_i log z_i + β (1 − y_i) log(α + z_i)]`` with its closed-form gradient
    ``∂L/∂u_j = (z_j S_y − y_j) + (r_j − z_j Σ_i r_i)``, ``r_i = β (1 − y_i) z_i / (α + z_i)``, ``S_y = Σ y``
    (bounded for ``α > 0``), computed in the forward pass and saved alone (as :class:`_DualFocalMap`).
    ``mask`` (``(K,)`` or ``None``) weighs each class's term (``include_background=False``): ``y`` and
    ``1 − y`` are multiplied by it in both the loss and the gradient. Once differentiable."""

    @staticmethod
    def forward(ctx, logits: Tensor, y: Tensor, mask: Tensor | None, alpha: float, beta: float):
        lz = torch.log_softmax(logits, dim=1)
        z = lz.exp()
        neg = _masked(1.0 - y, mask)
        y = _masked(y, mask)
        terms = torch.log(z + alpha).mul_(neg).mul_(beta).addcmul_(y, lz, value=-1.0)
        loss_map = terms.sum(1)
        if not ctx.needs_input_grad[0]:
            return loss_map
        r = neg.mul_(z).div_(z + alpha).mul_(beta)
        grad = r.sub_(z * r.sum(1, keepdim=True)).addcmul_(z, y.sum(1, keepdim=True)).sub_(y)
        ctx.save_for_backward(grad)
        return loss_map

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        (grad,) = ctx.saved_tensors
        return grad_output.unsqueeze(1) * grad, None, None, None, None


def _log_one_minus_softmax_at(logits: Tensor, lz: Tensor, z: Tensor, idx: Tensor) -> Tensor:
    """``log(1 − z)`` without autograd: ``log1p(−z)`` off the arg-max ``idx`` (``z ≤ ½`` there) and
    ``logsumexp_{k≠m} u_k − logsumexp_k u_k`` at it, scaled by the second-largest logit (finite for any gap
    up to float32's range)."""
    rest = logits.scatter(1, idx, float("-inf"))
    second = rest.amax(1, keepdim=True)
    lse_rest = rest.sub_(second).exp_().sum(1, keepdim=True).log_().add_(second)
    lse_all = logits.gather(1, idx) - lz.gather(1, idx)
    return torch.log1p(-z).scatter_(1, idx, lse_rest - lse_all)


class _DualFocalMap(torch.autograd.Function):
    """Per-voxel Dual Focal Loss ``(B, *spatial)`` with its closed-form gradient (Hossain et al. 2021, Eq.
    9–12, App. B).

    With ``z = softmax(u)``, ``S_y = Σ_i y_i``, ``r_i = (1 − y_i) z_i / (ρ − z_i)``, ``R = Σ_i r_i`` and
    ``q_i = αγ |y_i − z_i|^{γ−1} sign(z_i − y_i)``, ``Q = Σ_i q_i z_i``:

    ``∂L/∂u_j = (z_j S_y − y_j) + β (r_j − z_j R) + z_j (q_j − Q)``

    (the CE, the ``log(ρ − z)`` and the ``|y − z|^γ`` terms). The gradient is computed in the forward pass
    and kept as the only saved tensor: one ``(B, C, …)`` buffer instead of autograd's ~20 intermediates
    (4× less memory, 3–4× faster on the CPU, ``benchmarks/losses.py``). For ``ρ = 1`` the second term is
    evaluated as ``β z_j [(1 − y_j) − Σ_{i≠j} r_i]`` with ``z_j r_m = exp(log z_j + log z_m − log(1 − z_m))``
    for the arg-max class ``m``, the only one whose ``r`` can be large: no cancellation and no overflow
    for saturated logits, where ``z_m`` rounds to 1.

    ``mask`` (``(K,)`` or ``None``) weighs each class's term (``include_background=False``): with
    ``m_i`` the weight, the formula holds with ``y_i → m_i y_i`` in the CE term, ``1 − y_i → m_i (1 − y_i)``
    in ``r`` and ``q_i → m_i q_i``. Once differentiable: a second derivative raises (use
    :func:`dual_focal_terms` for higher derivatives).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, y: Tensor, mask: Tensor | None, *params: float):
        alpha, beta, gamma, rho = params
        # no autograd graph in here: in-place updates keep the number of full-size buffers small
        lz = torch.log_softmax(logits, dim=1)
        z = lz.exp()
        neg = _masked(1.0 - y, mask)
        idx = logits.argmax(1, keepdim=True)
        if rho == 1.0:
            log_neg = _log_one_minus_softmax_at(logits, lz, z, idx)
        else:
            log_neg = torch.log(rho - z)
        diff = z - y
        err = diff.abs()
        if gamma < 1:
            err.clamp_min_(1e-12)
        err_pow = _masked(err if gamma == 1.0 else err.pow(gamma), mask)
        y_ce = _masked(y, mask)
        terms = neg * log_neg
        terms.mul_(-beta).addcmul_(y_ce, lz, value=-1.0).add_(err_pow, alpha=alpha)
        loss_map = terms.sum(1)
        if not ctx.needs_input_grad[0]:
            return loss_map
        del terms
        # |y − z|^γ term: q_i = αγ|y − z|^{γ−1} sign(z − y) (zero slope where err was clamped, as autograd)
        q = diff.sign_()
        if gamma != 1.0:
            q.mul_(err.pow_(gamma - 1)).mul_(gamma)
            if gamma < 1:
                q.masked_fill_(err >= 1e12 ** (1 - gamma), 0.0)
        q.mul_(alpha)
        if mask is not None:
            q.mul_(_per_class(mask, q))
        q.sub_((q * z).sum(1, keepdim=True))
        grad = z * y_ce.sum(1, keepdim=True)
        grad.sub_(y_ce).addcmul_(z, q)
        del q, err, diff
        if rho == 1.0:
            # β z_j [(1 − y_j) − Σ_{i≠j} r_i] with r_i = (1 − y_i) z_i / (1 − z_i); only the arg-max r can be
            # large: its products z_j r_m are taken in the log domain (lz_j + log r_m ≤ log z_m ≤ 0)
            log_r = lz - log_neg
            r = log_r.exp().mul_(neg).scatter_(1, idx, 0.0)
            cross = (lz + log_r.gather(1, idx)).exp_().scatter_(1, idx, 0.0).mul_(neg.gather(1, idx))
            r.sub_(r.sum(1, keepdim=True)).add_(neg).mul_(z).sub_(cross)
            grad.add_(r, alpha=beta)
        else:
            r = neg.mul_(z).div_(rho - z)
            grad.add_(r.sub_(z * r.sum(1, keepdim=True)), alpha=beta)
        ctx.save_for_backward(grad)
        return loss_map

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        (grad,) = ctx.saved_tensors
        return grad_output.unsqueeze(1) * grad, None, None, None, None, None, None


@register("dfl", multilabel=True)
class DualFocalLoss(_VoxelLoss):
    """Dual Focal Loss, Hossain et al. 2021, Eq. 6–8 with the sign of Eq. 7 / Appendix B (DESIGN §3):

    ``L_n = −Σ_i y_{i,n} log z_{i,n} − β Σ_i (1 − y_{i,n}) log(ρ − z_{i,n}) + α Σ_i |y_{i,n} − z_{i,n}|^γ``

    summed over classes per voxel, averaged over valid voxels. Defaults ``alpha = beta = gamma = rho = 1``
    (Hossain et al. 2021, §4). Eq. 8 as printed puts the ``α`` term under the minus sign, which would reward
    error; the paper's derivatives (Eq. 12, B.7/B.8) and the authors' code use ``+``. With ``ρ = 1``, ``log(1
    − z)`` is computed from the logits by log-sum-exp (finite for saturated logits, fp16 inputs included);
    ``ρ < 1`` is rejected. For ``γ < 1`` the gradient of ``|·|^γ`` at 0 is infinite: ``|y − z|`` is clamped
    at ``1e-12`` (zero gradient there) so no NaN appears.

    The gradient is the paper's closed form (:class:`_DualFocalMap`), computed with the loss in one pass;
    the tests check it against autograd of the equation in float64.

    Multi-label (``sigmoid=True`` with ``C > 1``, nnU-Net's regions), a reading: the paper's loss is a sum
    of one-vs-rest terms per class on the probabilities; with a sigmoid probability ``z = σ(x)`` per channel
    each channel keeps its own term, ``−y log z − β (1 − y) log(ρ − z) + α |y − z|^γ``
    (:func:`sigmoid_dual_focal_terms`; ``β = ρ = 1``: BCE + ``α|y − z|^γ``), mean over valid voxels and
    channels, plain autograd. A binary ``C == 1`` task keeps the two-class softmax form ``[1 − σ, σ]``
    (both classes' terms), so a one-channel input is not the one-channel case of this form.

    Example:
        >>> import torch
        >>> loss = DualFocalLoss()
        >>> v = loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long))
        >>> round(float(v), 4)  # log 2 + log 2 + 2 · 0.5
        2.3863
    """

    def __init__(
        self, alpha: float = 1.0, beta: float = 1.0, gamma: float = 1.0, rho: float = 1.0, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.alpha = check_number(owner, "alpha", alpha, low=0)
        self.beta = check_number(owner, "beta", beta, low=0)
        self.gamma = check_number(owner, "gamma", gamma, low=0, low_open=True)
        self.rho = check_number(owner, "rho (log(rho - z) with z -> 1)", rho, low=1)

    def forward_prepared(self, p: Prepared) -> Tensor:
        params = (self.alpha, self.beta, self.gamma, self.rho)
        if p.multilabel:
            return self.reduce_multilabel(sigmoid_dual_focal_terms(p.logits, p.onehot, *params), p)
        if p.activation != "softmax":
            raise ValueError(
                "DualFocalLoss needs logits: softmax (the paper's z = softmax(u)) or per-channel sigmoid"
            )
        mask = self.class_mask(p)
        if self.reduction == "none":
            return self.reduce_terms(_masked(dual_focal_terms(p.logits, p.onehot, *params), mask), p)
        loss_map = _DualFocalMap.apply(p.logits, p.onehot, mask, *params)
        return self.reduce_terms(loss_map.unsqueeze(1), p)


def focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0, alpha=None, **kwargs) -> Tensor:
    """Functional form of :class:`SoftmaxFocalLoss`."""
    return SoftmaxFocalLoss(gamma=gamma, alpha=alpha, **kwargs)(logits, target)


def dual_cross_entropy(
    logits: Tensor, target: Tensor, alpha: float = 1.0, beta: float = 1.0, **kwargs
) -> Tensor:
    """Functional form of :class:`DualCrossEntropyLoss`."""
    return DualCrossEntropyLoss(alpha=alpha, beta=beta, **kwargs)(logits, target)


def dual_focal_loss(
    logits: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    rho: float = 1.0,
    **kwargs,
) -> Tensor:
    """Functional form of :class:`DualFocalLoss`."""
    return DualFocalLoss(alpha=alpha, beta=beta, gamma=gamma, rho=rho, **kwargs)(logits, target)
