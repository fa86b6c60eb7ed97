"""Compound losses: MONAI DiceCE agreement, Combo's sign, ExpLog's terms, the generic ``compound``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from segbalance.monai_losses import get
from segbalance.monai_losses.base import SegLoss
from segbalance.monai_losses.compound import log_one_minus_probs
from segbalance.monai_losses.inputs import prepare

PROBS = dict(softmax=False, sigmoid=False)
NO_SMOOTH = dict(smooth_nr=0.0, smooth_dr=0.0)


def batch(seed=0, b=2, c=3, shape=(5, 6, 4)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, *shape, generator=g) * 2
    labels = torch.randint(0, c, (b, 1, *shape), generator=g)
    return logits, labels


# ---------------------------------------------------------------- Dice + CE
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("batch_flag", [True, False])
def test_dice_ce_equals_monai(include_background, batch_flag):
    from monai.losses import DiceCELoss as MonaiDiceCE

    logits, labels = batch(1)
    kw = dict(include_background=include_background, batch=batch_flag)
    ref = MonaiDiceCE(softmax=True, to_onehot_y=True, lambda_dice=1.0, lambda_ce=1.0, **kw)(logits, labels)
    torch.testing.assert_close(get("dice_ce", **kw)(logits, labels), ref, rtol=1e-5, atol=1e-6)
    weighted = MonaiDiceCE(softmax=True, to_onehot_y=True, lambda_dice=0.3, lambda_ce=2.0, **kw)(
        logits, labels
    )
    ours = get("dice_ce", lambda_dice=0.3, lambda_ce=2.0, **kw)(logits, labels)
    torch.testing.assert_close(ours, weighted, rtol=1e-5, atol=1e-6)


def test_binary_dice_ce_equals_monai_sigmoid():
    from monai.losses import DiceCELoss as MonaiDiceCE

    logits = torch.randn(2, 1, 6, 5, 4)
    mask = (torch.rand(2, 1, 6, 5, 4) > 0.7).float()
    torch.testing.assert_close(get("dice_ce")(logits, mask), MonaiDiceCE(sigmoid=True)(logits, mask))


def test_logdice_ce_is_sum_of_its_terms():
    logits, labels = batch(2)
    expected = get("logdice")(logits, labels) + F.cross_entropy(logits, labels[:, 0])
    torch.testing.assert_close(get("logdice_ce")(logits, labels), expected)


def test_dice_ce_per_image_values_with_ignore():
    logits, labels = batch(3)
    target = labels.clone()
    target[1, ..., 3:] = 9
    none = get("dice_ce", ignore_index=9, reduction="none")(logits, target)
    assert none.shape == (2,) + (1,) * (logits.ndim - 1)  # per image, broadcastable like MONAI's
    second = get("dice_ce")(logits[1:, ..., :3], labels[1:, ..., :3])
    torch.testing.assert_close(none.flatten()[1], second)
    with pytest.raises(ValueError, match="batch"):
        get("dice_ce", batch=True, reduction="none")(logits, labels)


# ---------------------------------------------------------------- Combo
def test_log_one_minus_probs_is_stable_and_exact():
    x = torch.randn(2, 4, 3, 3) * 3
    p = prepare(x, torch.zeros(2, 1, 3, 3, dtype=torch.long))
    torch.testing.assert_close(
        log_one_minus_probs(p), torch.log1p(-torch.softmax(x, 1)), rtol=1e-4, atol=1e-5
    )
    big = torch.tensor([[[[200.0]], [[0.0]]]], requires_grad=True)  # softmax saturates to exactly 1
    p = prepare(big, torch.zeros(1, 1, 1, 1, dtype=torch.long))
    value = log_one_minus_probs(p)[0, 0]
    assert torch.isfinite(value) and value.item() == pytest.approx(-200.0)
    value.sum().backward()
    assert torch.isfinite(big.grad).all() and big.grad.abs().sum() > 0


def test_combo_hand_computed_binary():
    """Binary task: the CE term is β-weighted BCE of the foreground channel (Ma 2020, Eq. 15)."""
    logits = torch.tensor([1.5, -0.5, 2.0, -1.0]).view(1, 1, 1, 4)
    mask = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 1, 1, 4)
    z = torch.sigmoid(logits)
    alpha, beta = 0.4, 0.7
    ce = -(beta * mask * torch.log(z) + (1 - beta) * (1 - mask) * torch.log(1 - z)).mean()
    dice = 2 * (z * mask).sum() / (z.sum() + mask.sum())
    expected = alpha * ce - (1 - alpha) * dice
    value = get("combo", alpha=alpha, beta=beta, **NO_SMOOTH)(logits, mask)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_combo_penalises_false_positives():
    """The paper's sign: raising the foreground probability on a background voxel raises the loss.

    The public Keras code adds ``(1 − β)(1 − y) ln(1 − z)`` with the wrong sign, which would reward it.
    """
    mask = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 1, 4)
    low = torch.tensor([3.0, -3.0, -3.0, -3.0]).view(1, 1, 1, 4)
    high = torch.tensor([3.0, 1.0, -3.0, -3.0]).view(1, 1, 1, 4)
    combo_ce_only = get("combo", alpha=1.0)
    assert combo_ce_only(high, mask) > combo_ce_only(low, mask) > 0


def test_combo_minimum_at_perfect_prediction():
    _, labels = batch(4)
    oh = F.one_hot(labels[:, 0], 3).movedim(-1, 1).float()
    value = get("combo", alpha=0.3, **PROBS)(oh, labels)
    assert value.item() == pytest.approx(-(1 - 0.3), abs=1e-5)
    assert get("combo", alpha=0.3, **PROBS)(0.9 * oh + 0.1 / 3, labels) > value


# ---------------------------------------------------------------- ExpLog
def test_explog_terms():
    logits, labels = batch(5)
    lp = F.log_softmax(logits, 1)
    # γ = 1, CE weight off: the mean log-Dice
    dice_only = get("explog", w_dice=1.0, w_ce=0.0, gamma_dice=1.0, **NO_SMOOTH)(logits, labels)
    torch.testing.assert_close(dice_only, get("logdice", **NO_SMOOTH)(logits, labels), rtol=1e-5, atol=1e-6)
    # γ = 1, Dice off, given equal frequencies: w_l = sqrt(3) · CE
    ce_only = get("explog", w_dice=0.0, w_ce=1.0, gamma_ce=1.0, class_frequencies=[5, 5, 5])(logits, labels)
    torch.testing.assert_close(
        ce_only, math.sqrt(3) * F.cross_entropy(logits, labels[:, 0]), rtol=1e-5, atol=1e-6
    )
    # default γ = 0.3 and batch frequencies, by hand
    f = torch.bincount(labels.flatten(), minlength=3).float()
    w = torch.sqrt(f.sum() / f)
    nll = -lp.gather(1, labels)[:, 0]
    ce_term = (w[labels[:, 0]] * nll.clamp_min(1e-6) ** 0.3).mean()
    z = torch.softmax(logits, 1)
    oh = F.one_hot(labels[:, 0], 3).movedim(-1, 1).float()
    dice = (2 * (z * oh).sum((2, 3, 4)) + 1) / ((z + oh).sum((2, 3, 4)) + 1)
    dice_term = ((-torch.log(dice)) ** 0.3).mean()
    expected = 0.8 * dice_term + 0.2 * ce_term
    torch.testing.assert_close(get("explog")(logits, labels), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="class_frequencies"):
        get("explog", class_frequencies=[1, 2])(logits, labels)


# ---------------------------------------------------------------- generic compound
def test_compound_is_the_weighted_sum():
    logits, labels = batch(6)
    loss = get("compound", terms={"ce": 0.5, "tversky": {"weight": 2.0, "kwargs": {"fn_weight": 0.9}}})
    expected = 0.5 * get("ce")(logits, labels) + 2.0 * get("tversky", fn_weight=0.9)(logits, labels)
    torch.testing.assert_close(loss(logits, labels), expected)
    none = get("compound", terms={"ce": 0.5, "dice": 1.0}, reduction="none")(logits, labels)
    assert none.shape == (2,) + (1,) * (logits.ndim - 1)
    torch.testing.assert_close(none.mean(), get("compound", terms={"ce": 0.5, "dice": 1.0})(logits, labels))


def test_compound_prepares_once_when_conventions_match(monkeypatch):
    calls = []
    original = SegLoss.prepare

    def counting(self, logits, target):
        calls.append(type(self).__name__)
        return original(self, logits, target)

    monkeypatch.setattr(SegLoss, "prepare", counting)
    logits, labels = batch(7)
    get("compound", terms={"ce": 1.0, "dice": 1.0, "gdl": 1.0}, ignore_index=None)(logits, labels)
    assert calls == ["CompoundLoss"]
    calls.clear()
    # a term with its own activation flags falls back to preparing per term, with the same result
    mixed = get("compound", terms={"ce": 1.0, "dice": {"weight": 1.0, "kwargs": {"softmax": True}}})
    value = mixed(logits, labels)
    assert len(calls) == 2
    torch.testing.assert_close(value, get("ce")(logits, labels) + get("dice")(logits, labels))


def test_compound_passes_dist_to_terms_that_take_it():
    logits, labels = batch(8, c=2, shape=(6, 6, 6))
    dist = torch.randn(2, 2, 6, 6, 6)
    loss = get("compound", terms={"gdl": 1.0, "boundary": 0.1})
    expected = get("gdl")(logits, labels) + 0.1 * get("boundary")(logits, labels, dist=dist)
    torch.testing.assert_close(loss(logits, labels, dist=dist), expected)
    with pytest.raises(ValueError, match="spacing_map"):
        loss(logits, labels, spacing_map=dist)


@pytest.mark.parametrize(
    "terms, match",
    [
        ({}, "non-empty"),
        ({"nope": 1.0}, "known losses"),
        ({"dice": "one"}, "weight"),
        ({"dice": {"w": 1}}, "unknown keys"),
        ({"dice": {"kwargs": {"no_such_arg": 1}}}, "dice"),
        ({"compound": 1.0}, "compound"),
    ],
)
def test_compound_bad_terms(terms, match):
    with pytest.raises(ValueError, match=match):
        get("compound", terms=terms)


@pytest.mark.parametrize("name", ["dice_ce", "logdice_ce", "combo", "explog"])
def test_compounds_zero_gradient_at_ignored_and_per_image_none(name):
    logits, labels = batch(9)
    target = labels.clone()
    target[..., :2] = 4
    x = logits.clone().requires_grad_(True)
    get(name, ignore_index=4)(x, target).backward()
    assert (x.grad[..., :2] == 0).all() and (x.grad[..., 2:] != 0).any()
    none = get(name, reduction="none")(logits, labels)
    assert none.shape == (2,) + (1,) * (logits.ndim - 1)
    torch.testing.assert_close(none.mean(), get(name)(logits, labels), rtol=1e-5, atol=1e-6)
