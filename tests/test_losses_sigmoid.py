"""Multi-label (per-channel sigmoid) forms of the per-voxel losses: ``ce``, ``wce``, ``focal``, ``recall``,
``dfl`` with ``sigmoid=True`` and ``C > 1`` channels (nnU-Net's region-based datasets).

References: ``torch.nn.functional.binary_cross_entropy_with_logits``, MONAI ``FocalLoss(use_softmax=False)``,
``torchvision.ops.sigmoid_focal_loss``, the binary ``C == 1`` form of each loss on each channel (independent
binary problems), hand counts, and float64 autograd of the plain formula.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segbalance.monai_losses import get
from segbalance.monai_losses.recall import recall_counts

ML = dict(sigmoid=True, to_onehot_y=False)


def batch(regions=3, shape=(5, 6, 7), seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, regions, *shape, generator=g) * scale
    y = (torch.rand(2, regions, *shape, generator=g) > 0.7).float()
    return x, y


def test_ce_is_bce_with_logits():
    x, y = batch()
    torch.testing.assert_close(get("ce", **ML)(x, y), F.binary_cross_entropy_with_logits(x, y))
    torch.testing.assert_close(
        get("ce", **ML, reduction="sum")(x, y), F.binary_cross_entropy_with_logits(x, y, reduction="sum")
    )
    torch.testing.assert_close(
        get("ce", **ML, reduction="none")(x, y), F.binary_cross_entropy_with_logits(x, y, reduction="none")
    )
    # include_background=False drops channel 0 (as MONAI's sigmoid FocalLoss)
    no_bg = get("ce", **ML, include_background=False)(x, y)
    torch.testing.assert_close(no_bg, F.binary_cross_entropy_with_logits(x[:, 1:], y[:, 1:]))
    # soft targets, and saturated logits stay finite with the exact value
    soft = torch.rand_like(y)
    torch.testing.assert_close(get("ce", **ML)(x, soft), F.binary_cross_entropy_with_logits(x, soft))
    big = torch.full((1, 2, 2, 2), 200.0)
    value = get("ce", **ML)(big, torch.zeros_like(big))
    torch.testing.assert_close(value, torch.tensor(200.0))


def test_ce_gradient_is_sigmoid_minus_target():
    x, y = batch()
    x.requires_grad_()
    get("ce", **ML)(x, y).backward()
    torch.testing.assert_close(x.grad, (torch.sigmoid(x) - y) / y.numel())


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_equals_monai_sigmoid_focal(gamma):
    from monai.losses import FocalLoss

    x, y = batch(seed=1)
    ours = get("focal", **ML, gamma=gamma)
    theirs = FocalLoss(use_softmax=False, gamma=gamma)
    torch.testing.assert_close(ours(x, y), theirs(x, y), rtol=1e-5, atol=1e-6)
    none = get("focal", **ML, gamma=gamma, reduction="none")(x, y)
    torch.testing.assert_close(none, FocalLoss(use_softmax=False, gamma=gamma, reduction="none")(x, y))


def test_focal_equals_torchvision_with_alpha():
    ops = pytest.importorskip("torchvision.ops")
    x, y = batch(seed=2)
    for a in (0.25, 0.8):
        expected = ops.sigmoid_focal_loss(x, y, alpha=a, gamma=2.0, reduction="mean")
        torch.testing.assert_close(get("focal", **ML, alpha=[1 - a, a])(x, y), expected, rtol=1e-5, atol=1e-7)
    expected = ops.sigmoid_focal_loss(x, y, alpha=-1, gamma=2.0, reduction="mean")
    torch.testing.assert_close(get("focal", **ML)(x, y), expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="negative, positive"):
        get("focal", **ML, alpha=[1.0, 2.0, 3.0])(x, y)


def test_focal_saturated_logits_finite_gradient():
    x = torch.tensor([-100.0, -30.0, 0.0, 30.0, 100.0]).view(1, 5, 1, 1).repeat(1, 1, 1, 2)
    y = torch.tensor([[[[1.0, 0.0]]]]).expand(1, 5, 1, 2)
    for gamma in (0.5, 2.0):
        xs = x.clone().requires_grad_()
        value = get("focal", **ML, gamma=gamma)(xs, y)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(xs.grad).all()


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("ce", {}),
        ("wce", {}),
        ("wce", {"weight": [1.0, 4.0]}),
        ("focal", {}),
        ("focal", {"gamma": 1.5, "alpha": [0.3, 0.7]}),
        ("recall", {}),
    ],
)
def test_multilabel_is_independent_binary_problems(name, kwargs):
    """Each channel's term is the binary ``C == 1`` loss on it (value and gradient), with an ignore mask."""
    import dataclasses

    x, y = batch(seed=3)
    valid = torch.rand(y[:, 0].shape, generator=torch.Generator().manual_seed(9)) > 0.2
    for mask in (None, valid):
        xs = x.clone().requires_grad_()
        loss = get(name, **ML, **kwargs)
        p = loss.prepare(xs, y)
        if mask is not None:
            p = dataclasses.replace(p, valid=mask, onehot=p.onehot * mask.unsqueeze(1))
        value = loss.forward_prepared(p)
        (grad,) = torch.autograd.grad(value, xs)
        per_channel, grads = [], []
        for c in range(3):
            xc = x[:, c : c + 1].clone().requires_grad_()
            yc = y[:, c : c + 1].long()
            if mask is not None:
                yc = torch.where(mask.unsqueeze(1), yc, torch.full_like(yc, 2))
            single = get(name, sigmoid=True, ignore_index=None if mask is None else 2, **kwargs)(xc, yc)
            per_channel.append(single)
            grads.append(torch.autograd.grad(single, xc)[0])
        torch.testing.assert_close(value, sum(per_channel) / 3, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, torch.cat(grads, 1) / 3, rtol=1e-4, atol=1e-7)


def test_recall_counts_by_hand():
    x = torch.tensor([[[[2.0, -1.0, 0.5, -3.0]], [[-1.0, -1.0, 1.0, 1.0]]]])  # (1, 2, 1, 4)
    y = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]], [[0.0, 1.0, 1.0, 0.0]]]])
    loss = get("recall", **ML)
    tp, fn = recall_counts(loss.prepare(x, y))
    # channel 0: pred [1,0,1,0]; positives 2 (TP 1, FN 1), negatives 2 (TN 1, FP 1)
    # channel 1: pred [0,0,1,1]; positives 2 (TP 1, FN 1), negatives 2 (TN 1, FP 1)
    torch.testing.assert_close(tp, torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
    torch.testing.assert_close(fn, torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
    # weights all 1/2: loss = BCE / 2
    expected = F.binary_cross_entropy_with_logits(x, y) * (1 / (2 + 1e-7))
    torch.testing.assert_close(loss(x, y), expected)


def test_recall_ema_state_multilabel():
    x, y = batch(seed=4)
    loss = get("recall", **ML, ema=0.9)
    loss(x, y)
    assert loss.tp_ema.shape == (3, 2)
    other = get("recall", **ML, ema=0.9)
    other.load_state_dict(loss.state_dict())
    x2, y2 = batch(seed=5)
    torch.testing.assert_close(other(x2, y2), loss(x2, y2))


def dfl_formula(x, y, alpha=1.0, beta=1.0, gamma=1.0, rho=1.0):
    z = torch.sigmoid(x)
    return (-y * torch.log(z) - beta * (1 - y) * torch.log(rho - z) + alpha * (y - z).abs() ** gamma).mean()


DFL_PARAMS = [{}, {"alpha": 0.5, "beta": 2.0, "gamma": 2.0}, {"rho": 1.5, "gamma": 1.5}]


@pytest.mark.parametrize("params", DFL_PARAMS)
def test_dfl_multilabel_equals_per_channel_formula(params):
    x, y = batch(seed=6, scale=1.0)
    xs = x.clone().requires_grad_()
    value = get("dfl", **ML, **params)(xs, y)
    value.backward()
    xd = x.double().requires_grad_()
    expected = dfl_formula(xd, y.double(), **params)
    expected.backward()
    torch.testing.assert_close(value.double(), expected.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(xs.grad.double(), xd.grad, rtol=1e-4, atol=1e-9)
    # β = ρ = 1, α = 0: binary cross-entropy with logits
    torch.testing.assert_close(
        get("dfl", **ML, alpha=0.0)(x, y), F.binary_cross_entropy_with_logits(x, y), rtol=1e-5, atol=1e-7
    )


def test_dfl_multilabel_saturated_logits_finite():
    x = torch.tensor([-200.0, -40.0, 40.0, 200.0]).view(1, 4, 1, 1).repeat(1, 1, 2, 2).requires_grad_()
    y = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 4, 1, 1).expand(1, 4, 2, 2)
    value = get("dfl", **ML)(x, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ["ce", "wce", "focal", "recall", "dfl"])
def test_binary_single_channel_unchanged_by_the_multilabel_path(name):
    """``C == 1`` stays the two-class softmax of ``[0, x]`` (the values the other tests pin down)."""
    x, y = batch(regions=1, seed=7)
    ours = get(name, sigmoid=True)(x, y.long())
    two_class = torch.cat([torch.zeros_like(x), x], 1)
    torch.testing.assert_close(ours, get(name)(two_class, y.long()), rtol=1e-6, atol=1e-7)


def test_fp16_logits_match_float32():
    x, y = batch(seed=8)
    for name in ("ce", "wce", "focal", "recall", "dfl"):
        torch.testing.assert_close(get(name, **ML)(x.half(), y), get(name, **ML)(x.half().float(), y))


@pytest.mark.parametrize("name", ["ce", "focal", "recall", "dfl"])
def test_none_mean_and_per_image_are_consistent(name):
    """``mean`` is the mean of the ``none`` terms over voxels and channels; per-image values (compound and
    boundary pairings use them) are the per-image means."""
    x, y = batch(seed=10)
    loss = get(name, **ML, reduction="none")
    p = loss.prepare(x, y)
    none = loss.forward_prepared(p)
    assert none.shape == x.shape
    mean = get(name, **ML)(x, y)
    torch.testing.assert_close(none.mean(), mean)
    torch.testing.assert_close(loss.mean_of_none(none, p), mean)
    torch.testing.assert_close(loss.per_image(none, p), none.flatten(1).mean(1))


def test_compound_of_multilabel_terms():
    x, y = batch(seed=11)
    compound = get("compound", terms={"focal": 1.0, "dice": 0.5}, **ML)
    expected = get("focal", **ML)(x, y) + 0.5 * get("dice", **ML)(x, y)
    torch.testing.assert_close(compound(x, y), expected)
    per_image = get("compound", terms={"ce": 1.0, "dice": 1.0}, **ML, reduction="none")(x, y)
    bce = F.binary_cross_entropy_with_logits(x, y, reduction="none").flatten(1).mean(1)
    dice = get("dice", **ML, reduction="none")(x, y).flatten(1).mean(1)
    torch.testing.assert_close(per_image.flatten(), bce + dice)
