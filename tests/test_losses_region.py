"""Region losses: hand-computed values, agreement with MONAI / nnU-Net, invariants, Lovász extension."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from segbalance.monai_losses import get
from segbalance.monai_losses.lovasz import lovasz_jaccard_grad

PROBS = dict(softmax=False, sigmoid=False)
NO_SMOOTH = dict(smooth_nr=0.0, smooth_dr=0.0)


def batch(seed=0, b=2, c=3, shape=(5, 6, 4)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, *shape, generator=g) * 2
    labels = torch.randint(0, c, (b, 1, *shape), generator=g)
    return logits, labels


def one_hot(labels, c):
    return F.one_hot(labels[:, 0], c).movedim(-1, 1).float()


# ---------------------------------------------------------------- hand-computed values
def tiny():
    """2 voxels, 2 classes: probs of class 1 = (0.8, 0.4), labels (1, 0)."""
    z1 = torch.tensor([0.8, 0.4])
    probs = torch.stack([1 - z1, z1]).view(1, 2, 1, 2)
    target = torch.tensor([1, 0]).view(1, 1, 1, 2)
    return probs, target


def test_dice_hand_computed():
    probs, target = tiny()
    # class 1: TP=0.8, Σz=1.2, Σg=1 ; class 0: TP=0.6, Σz=0.8, Σg=1
    d1, d0 = 1.6 / 2.2, 1.2 / 1.8
    value = get("dice", **PROBS, **NO_SMOOTH)(probs, target)
    assert value.item() == pytest.approx(1 - (d0 + d1) / 2, rel=1e-6)
    fg = get("dice", include_background=False, **PROBS, **NO_SMOOTH)(probs, target)
    assert fg.item() == pytest.approx(1 - d1, rel=1e-6)
    sq = get("dice", squared_pred=True, include_background=False, **PROBS, **NO_SMOOTH)(probs, target)
    assert sq.item() == pytest.approx(1 - 1.6 / (0.64 + 0.16 + 1), rel=1e-6)
    log = get("logdice", include_background=False, **PROBS, **NO_SMOOTH)(probs, target)
    assert log.item() == pytest.approx(-math.log(d1), rel=1e-6)


def test_iou_tversky_asym_focal_tversky_hand_computed():
    probs, target = tiny()
    kw = dict(include_background=False, **PROBS, **NO_SMOOTH)
    tp, fp, fn = 0.8, 0.4, 0.2
    assert get("iou", **kw)(probs, target).item() == pytest.approx(1 - tp / (1.2 + 1 - tp), rel=1e-6)
    ti = tp / (tp + 0.3 * fp + 0.7 * fn)
    assert get("tversky", **kw)(probs, target).item() == pytest.approx(1 - ti, rel=1e-6)
    assert get("focal_tversky", **kw)(probs, target).item() == pytest.approx((1 - ti) ** 0.75, rel=1e-5)
    f_beta = tp / (tp + 2.25 / 3.25 * fn + 1 / 3.25 * fp)
    assert get("asym", **kw)(probs, target).item() == pytest.approx(1 - f_beta, rel=1e-6)


def test_gdl_pgdl_hand_computed():
    # 3 voxels: labels (1, 0, 0); class 1 weight 1/1², class 0 weight 1/2²
    z1 = torch.tensor([0.7, 0.2, 0.1])
    probs = torch.stack([1 - z1, z1]).view(1, 2, 1, 3)
    target = torch.tensor([1, 0, 0]).view(1, 1, 1, 3)
    w0, w1 = 0.25, 1.0
    tp0, tp1 = 0.8 + 0.9, 0.7
    numer = 2 * (w0 * tp0 + w1 * tp1)
    denom = w0 * (2.0 + 2) + w1 * (1.0 + 1)  # Σz0 = 0.3 + 0.8 + 0.9
    gdl = 1 - numer / denom
    assert get("gdl", **PROBS, **NO_SMOOTH)(probs, target).item() == pytest.approx(gdl, rel=1e-6)
    pgdl = get("pgdl", k=2.5, **PROBS, **NO_SMOOTH)(probs, target).item()
    assert pgdl == pytest.approx(gdl / (1 + 2.5 * (1 - gdl)), rel=1e-6)
    assert get("pgdl", k=0.0, **PROBS, **NO_SMOOTH)(probs, target).item() == pytest.approx(gdl, rel=1e-6)


def test_gdl_absent_weight():
    """Class 2 absent: 'zero' drops it, 'max' gives it the largest finite weight (its FP then count)."""
    z = torch.tensor([[0.6, 0.1], [0.2, 0.7], [0.2, 0.2]])  # (C=3, 2 voxels)
    probs = z.view(1, 3, 1, 2)
    target = torch.tensor([0, 1]).view(1, 1, 1, 2)
    tp = torch.tensor([0.6, 0.7, 0.0])
    denom = z.sum(1) + torch.tensor([1.0, 1.0, 0.0])
    for mode, w in (("zero", torch.tensor([1.0, 1.0, 0.0])), ("max", torch.tensor([1.0, 1.0, 1.0]))):
        expected = 1 - 2 * (w * tp).sum() / (w * denom).sum()
        value = get("gdl", absent_weight=mode, **PROBS, **NO_SMOOTH)(probs, target)
        assert value.item() == pytest.approx(expected.item(), rel=1e-6), mode
    with pytest.raises(ValueError, match="absent_weight"):
        get("gdl", absent_weight="one")


def test_ss_hand_computed_and_bounds():
    probs, target = tiny()
    # class 1: g = (1, 0), z = (0.8, 0.4): sens = 0.04 / 1, spec = 0.16 / 1
    value = get("ss", include_background=False, smooth_dr=0.0, **PROBS)(probs, target)
    assert value.item() == pytest.approx(0.05 * 0.04 + 0.95 * 0.16, rel=1e-6)
    logits, labels = batch(1)
    for x in (logits, -50 * one_hot(labels, 3) + 25, 50 * one_hot(labels, 3)):
        v = get("ss", reduction="none")(x, labels)
        assert (v >= 0).all() and (v <= 1).all()
    perfect = get("ss", **PROBS)(one_hot(labels, 3), labels)
    assert perfect.item() == pytest.approx(0.0, abs=1e-7)
    worst = get("ss", **PROBS)(1 - one_hot(labels, 3), labels)  # every voxel wrong, fully confident
    assert worst.item() == pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------- agreement with MONAI / nnU-Net
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("batch_flag", [True, False])
@pytest.mark.parametrize("squared_pred", [False, True])
def test_dice_equals_monai(include_background, batch_flag, squared_pred):
    from monai.losses import DiceLoss as MonaiDice

    logits, labels = batch(2)
    kw = dict(include_background=include_background, batch=batch_flag, squared_pred=squared_pred)
    ours = get("dice", **kw)(logits, labels)
    ref = MonaiDice(softmax=True, to_onehot_y=True, **kw)(logits, labels)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    ours_none = get("dice", reduction="none", **kw)(logits, labels)
    ref_none = MonaiDice(softmax=True, to_onehot_y=True, reduction="none", **kw)(logits, labels)
    torch.testing.assert_close(ours_none, ref_none.reshape(ours_none.shape), rtol=1e-5, atol=1e-6)


def test_binary_dice_equals_monai_sigmoid():
    from monai.losses import DiceLoss as MonaiDice

    logits = torch.randn(2, 1, 6, 5, 4)
    mask = (torch.rand(2, 1, 6, 5, 4) > 0.7).float()
    torch.testing.assert_close(get("dice")(logits, mask), MonaiDice(sigmoid=True)(logits, mask))


@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("do_bg", [True, False])
def test_dice_relation_to_nnunet(batch_dice, do_bg):
    """nnU-Net's MemoryEfficientSoftDiceLoss returns −mean Dice (smooth 1): ours (smooth 1) = 1 + theirs."""
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.utilities.helpers import softmax_helper_dim1

    logits, labels = batch(3)
    theirs = MemoryEfficientSoftDiceLoss(
        softmax_helper_dim1, batch_dice=batch_dice, do_bg=do_bg, smooth=1.0, ddp=False
    )(logits, labels)
    ours = get("dice", batch=batch_dice, include_background=do_bg, smooth_nr=1.0, smooth_dr=1.0)(
        logits, labels
    )
    torch.testing.assert_close(ours, 1 + theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("batch_flag", [True, False])
def test_gdl_equals_monai(include_background, batch_flag):
    from monai.losses import GeneralizedDiceLoss as MonaiGDL

    logits, labels = batch(4, c=4)
    labels[0][labels[0] == 2] = 1  # class 2 absent from image 0: the infinite-weight path
    kw = dict(include_background=include_background, batch=batch_flag)
    ref = MonaiGDL(softmax=True, to_onehot_y=True, **kw)(logits, labels)
    torch.testing.assert_close(get("gdl", **kw)(logits, labels), ref, rtol=1e-5, atol=1e-6)
    ref_none = MonaiGDL(softmax=True, to_onehot_y=True, reduction="none", **kw)(logits, labels)
    ours_none = get("gdl", reduction="none", **kw)(logits, labels)
    torch.testing.assert_close(ours_none, ref_none.reshape(ours_none.shape), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_flag", [True, False])
def test_tversky_equals_monai(batch_flag):
    from monai.losses import TverskyLoss as MonaiTversky

    logits, labels = batch(5)
    ref = MonaiTversky(softmax=True, to_onehot_y=True, alpha=0.3, beta=0.7, batch=batch_flag)(logits, labels)
    ours = get("tversky", fp_weight=0.3, fn_weight=0.7, batch=batch_flag)(logits, labels)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # and the weights are named for what they weigh: a pure over-segmentation costs only fp_weight
    probs = torch.tensor([1.0, 1.0]).view(1, 1, 1, 2)
    probs = torch.cat([1 - probs, probs], 1)
    target = torch.tensor([1, 0]).view(1, 1, 1, 2)  # TP 1, FP 1, FN 0
    kw = dict(include_background=False, **PROBS, **NO_SMOOTH)
    assert get("tversky", fp_weight=0.3, fn_weight=0.0, **kw)(probs, target).item() == pytest.approx(
        1 - 1 / 1.3
    )
    assert get("tversky", fp_weight=0.0, fn_weight=0.7, **kw)(probs, target).item() == pytest.approx(0.0)


# ---------------------------------------------------------------- invariants
REGION = ["dice", "logdice", "iou", "tversky", "focal_tversky", "asym", "gdl", "pgdl", "ss", "lovasz"]


@pytest.mark.parametrize("name", REGION)
def test_zero_at_perfect_prediction(name):
    _, labels = batch(6)
    labels[:, :, 0, 0, 0] = torch.tensor([0, 1]).view(2, 1)  # keep it non-trivial
    value = get(name, **PROBS)(one_hot(labels, 3), labels)
    assert value.item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("name", REGION)
def test_worse_prediction_costs_more(name):
    _, labels = batch(7)
    oh = one_hot(labels, 3)
    good = get(name, **PROBS)(0.8 * oh + 0.2 / 3, labels)
    bad = get(name, **PROBS)(0.4 * oh + 0.6 / 3, labels)
    assert bad > good > 0


def test_tversky_half_half_is_dice_and_focal_gamma_one_is_tversky():
    logits, labels = batch(8)
    torch.testing.assert_close(
        get("tversky", fp_weight=0.5, fn_weight=0.5)(logits, labels), get("dice")(logits, labels)
    )
    torch.testing.assert_close(
        get("focal_tversky", gamma=1.0)(logits, labels), get("tversky")(logits, labels), rtol=1e-6, atol=1e-7
    )
    # exponent per class: (mean of (1-TI_c)^{1/γ}) differs from (mean (1-TI_c))^{1/γ}
    per_class = get("tversky", reduction="none")(logits, labels)
    ft = get("focal_tversky", gamma=2.0)(logits, labels)
    torch.testing.assert_close(ft, (per_class**0.5).mean(), rtol=1e-5, atol=1e-6)
    # asym with beta=1 is Dice
    torch.testing.assert_close(get("asym", beta=1.0)(logits, labels), get("dice")(logits, labels))


@pytest.mark.parametrize("name", ["dice", "iou", "tversky", "gdl", "lovasz"])
def test_batch_pools_sums(name):
    """batch=True scores the batch as one volume: the per-image loss of the images laid side by side."""
    logits, labels = batch(9)
    joined_logits = torch.cat(list(logits), dim=-1).unsqueeze(0)
    joined_labels = torch.cat(list(labels), dim=-1).unsqueeze(0)
    pooled = get(name, batch=True)(logits, labels)
    torch.testing.assert_close(pooled, get(name)(joined_logits, joined_labels), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(pooled, get(name)(logits, labels))


@pytest.mark.parametrize("name", ["dice", "gdl"])
def test_reduction_none_shapes(name):
    logits, labels = batch(10, b=3)
    none = get(name, reduction="none")(logits, labels)
    assert none.shape[0] == 3
    assert get(name, reduction="none", batch=True)(logits, labels).shape[0] in (1, 3 if name == "dice" else 1)


def test_dice_gradient_matches_formula():
    """d(1 − D_c)/dz = −2(g·S − I)/S² with S = Σz + Σg, I = Σ z g (Milletari et al. Eq. 2's derivative)."""
    _, labels = batch(11, b=1)
    g = one_hot(labels, 3)
    z = torch.rand_like(g).requires_grad_(True)
    get("dice", reduction="sum", **PROBS, **NO_SMOOTH)(z, labels).backward()
    s = (z + g).sum((2, 3, 4), keepdim=True).detach()
    inter = (z * g).sum((2, 3, 4), keepdim=True).detach()
    torch.testing.assert_close(z.grad, -2 * (g * s - inter) / s**2, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- Lovász
def jaccard_loss_of_set(gt: torch.Tensor, mispredicted: torch.Tensor) -> float:
    pred = gt.bool() ^ mispredicted.bool()
    union = (gt.bool() | pred).sum().item()
    return 0.0 if union == 0 else 1 - (gt.bool() & pred).sum().item() / union


def lovasz_extension_brute(errors: torch.Tensor, gt: torch.Tensor) -> float:
    """∫_0^1 Δ({i : e_i ≥ t}) dt, exactly, by integrating between the sorted error levels."""
    levels = sorted(set([0.0, *errors.tolist()]))
    total = 0.0
    for lo, hi in zip(levels[:-1], levels[1:]):
        total += (hi - lo) * jaccard_loss_of_set(gt, errors >= hi)
    return total


def test_lovasz_grad_at_binary_vectors_is_jaccard_loss():
    gt = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    for bits in itertools.product([0.0, 1.0], repeat=5):
        e = torch.tensor(bits)
        order = e.argsort(descending=True)
        value = (e[order] * lovasz_jaccard_grad(gt[order])).sum().item()
        assert value == pytest.approx(jaccard_loss_of_set(gt, e), abs=1e-6), bits


def test_lovasz_matches_brute_force_extension():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(2, 3, 3, 4), 1)
    labels = torch.randint(0, 3, (2, 1, 3, 4))
    labels[:, 0, 0, 0] = 0
    g = one_hot(labels, 3)
    for per_image, classes in ((True, "present"), (True, "all"), (False, "present")):
        expected = []
        images = (
            [(probs[i], g[i]) for i in range(2)]
            if per_image
            else [(torch.cat(list(probs), -1), torch.cat(list(g), -1))]
        )
        for z, gi in images:
            vals = [
                lovasz_extension_brute((gi[c] - z[c]).abs().flatten(), gi[c].flatten())
                for c in range(3)
                if classes == "all" or gi[c].sum() > 0
            ]
            expected.append(sum(vals) / len(vals))
        value = get("lovasz", batch=not per_image, classes=classes, **PROBS)(probs, labels)
        assert value.item() == pytest.approx(sum(expected) / len(expected), rel=1e-5)


def test_lovasz_ignored_voxels_are_removed():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 4, 5)
    labels = torch.randint(0, 3, (1, 1, 4, 5))
    keep = torch.zeros(1, 1, 4, 5, dtype=torch.bool)
    keep[..., :3] = True
    target = torch.where(keep, labels, torch.full_like(labels, 7))
    value = get("lovasz", ignore_index=7)(logits, target)
    cropped = get("lovasz")(logits[..., :3], labels[..., :3])
    torch.testing.assert_close(value, cropped)


# ---------------------------------------------------------------- ignore / validation
@pytest.mark.parametrize("name", ["dice", "gdl", "tversky", "ss", "iou"])
def test_ignore_index_equals_cropping(name):
    logits, labels = batch(12, b=1)
    target = labels.clone()
    target[..., 4:] = 5
    torch.testing.assert_close(
        get(name, ignore_index=5)(logits, target), get(name)(logits[..., :4], labels[..., :4])
    )


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("tversky", {"fp_weight": -1}, "fp_weight"),
        ("focal_tversky", {"gamma": 0}, "gamma"),
        ("pgdl", {"k": -1}, "k must"),
        ("ss", {"r": 2}, "r must"),
        ("lovasz", {"classes": "some"}, "classes"),
        ("dice", {"smooth_nr": -1}, "smooth_nr"),
        ("asym", {"fp_weight": 0.3}, "beta"),
    ],
)
def test_bad_arguments_are_named(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        get(name, **kwargs)
