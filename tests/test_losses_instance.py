"""Blob loss and CC-DiceCE against values computed by hand on small analytic volumes.

The base loss ``ℓ(R) = (1 − (2 Σ p y + ε)/(Σ p + Σ y + ε)) + (1/|R|) Σ −[y log p + (1 − y) log(1 − p)]`` is
written out here with numpy from the voxel sets of each case; the volumes are lines and boxes whose
components and Voronoi regions can be read off.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from segbalance.monai_losses import get
from segbalance.monai_losses.instance_maps import component_ids, instance_maps, voronoi_regions

EPS = 1e-5


def ell(p: np.ndarray, y: np.ndarray, lambda_dice=1.0, lambda_ce=1.0) -> float:
    """The base loss on one voxel set (flat arrays of the class probability and the 0/1 target)."""
    p, y = p.astype(np.float64), y.astype(np.float64)
    dice = 1.0 - (2 * (p * y).sum() + EPS) / (p.sum() + y.sum() + EPS)
    ce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
    return lambda_dice * dice + lambda_ce * ce


def binary_logits(prob: np.ndarray) -> torch.Tensor:
    """Two-channel logits ``[0, logit(p)]`` whose softmax foreground probability is ``prob``."""
    x = torch.from_numpy(np.log(prob / (1 - prob))).float()
    return torch.stack([torch.zeros_like(x), x])[None]


def two_lesions(big=20, small=2, length=40):
    """A line with a ``big``-voxel lesion at the start and a ``small`` one near the end (2D, H = 1)."""
    y = np.zeros(length, np.int64)
    y[:big] = 1
    y[length - 4 : length - 4 + small] = 1
    return y


def no_warnings(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args)


# ------------------------------------------------------------------------------------------ instance maps


def test_components_and_voronoi_regions_of_a_line():
    y = two_lesions()
    ids, n = component_ids(y[None].astype(bool))
    assert n == 2 and ids[0, 0] == 1 and ids[0, -4] == 2 and (ids[0, 20:36] == 0).all()
    regions = voronoi_regions(ids, n)
    # lesion 1 ends at 19, lesion 2 starts at 36: the midpoint 27.5; ties go to the lower id
    assert (regions[0, :28] == 1).all() and (regions[0, 28:] == 2).all()


def test_voronoi_uses_spacing_and_many_components_path():
    ids = np.zeros((3, 9), np.int32)
    ids[0, 0], ids[2, 8] = 1, 2
    # with a large row spacing, every voxel of row 0 is nearest to component 1, of row 2 to component 2
    near = voronoi_regions(ids, 2, spacing=(10.0, 1.0))
    assert (near[0] == 1).all() and (near[2] == 2).all()
    many = np.zeros((1, 40), np.int32)
    many[0, ::4] = np.arange(1, 11)  # 10 components: scipy's feature transform
    regions = voronoi_regions(many, 10)
    expected = np.minimum(np.arange(40) // 4 + 1 + ((np.arange(40) % 4) > 2), 10)  # ties (offset 2): lower
    np.testing.assert_array_equal(regions[0], expected)


def test_voronoi_region_is_a_nearest_component_everywhere():
    """Against brute force (the distance to every component, scipy's exact EDT in float64): each voxel's
    region is a component at the smallest distance; where two are equally near either may win."""
    from scipy import ndimage

    rng = np.random.default_rng(7)
    mask = rng.random((9, 17, 15)) > 0.985
    ids, n = component_ids(mask)
    assert n >= 3
    spacing = (2.5, 0.8, 0.7)
    regions = voronoi_regions(ids, n, spacing)
    dist = np.stack([ndimage.distance_transform_edt(ids != j, sampling=spacing) for j in range(1, n + 1)])
    assigned = np.take_along_axis(dist, (regions - 1)[None].astype(np.int64), 0)[0]
    np.testing.assert_allclose(assigned, dist.min(0), rtol=1e-12, atol=1e-12)
    assert (regions[ids > 0] == ids[ids > 0]).all()  # a component's own voxels are its region


# ---------------------------------------------------------------------------------------------- blob loss


def test_blob_two_lesions_of_very_different_size_weigh_equally():
    """Only the small lesion is missed: its component term is large, the big lesion's is small, and the mean
    gives each half, although the small lesion is 1/11 of the foreground."""
    y = two_lesions(big=20, small=2)
    prob = np.where(y == 1, 0.9, 0.1)
    prob[36:38] = 0.1  # the small lesion is missed
    logits, target = binary_logits(prob[None]), torch.from_numpy(y)[None, None, None]
    maps = torch.from_numpy(component_ids(y[None].astype(bool))[0])[None, None]
    maps = torch.cat([torch.zeros_like(maps), maps], 1)
    background = y == 0
    c1, c2 = np.arange(40) < 20, (np.arange(40) >= 36) & (np.arange(40) < 38)
    l1 = ell(prob[c1 | background], y[c1 | background])
    l2 = ell(prob[c2 | background], y[c2 | background])
    expected = 2 * ell(prob, y) + (l1 + l2) / 2
    value = no_warnings(get("blob"), logits, target, maps)
    assert float(value) == pytest.approx(expected, rel=1e-5)
    # each lesion weighs 1/2 in the component term: the missed small one dominates it
    assert l2 > 5 * l1
    component = get("blob", alpha=0.0)(logits, target, maps)
    assert float(component) == pytest.approx((l1 + l2) / 2, rel=1e-5)


def test_blob_leaves_other_components_out_not_at_half_probability():
    """The reference code multiplies the output by the mask (masked logits 0, p = 0.5): those voxels stay in
    Dice's Σp and the CE mean. Here they are excluded; both readings computed by hand."""
    y = two_lesions(big=20, small=2)
    prob = np.where(y == 1, 0.8, 0.2)
    logits, target = binary_logits(prob[None]), torch.from_numpy(y)[None, None, None]
    idx = np.arange(40)
    c1, c2, background = idx < 20, (idx >= 36) & (idx < 38), y == 0
    s1, s2 = c1 | background, c2 | background
    ours = (ell(prob[s1], y[s1]) + ell(prob[s2], y[s2])) / 2
    # reference: component n's target is the component only; masked voxels (the other lesion) get p = 0.5
    ref = []
    for comp, other in ((c1, c2), (c2, c1)):
        p_ref = np.where(other, 0.5, prob)
        ref.append(ell(p_ref, comp.astype(np.int64)))
    reference = sum(ref) / 2
    value = get("blob", alpha=0.0)(logits, target)
    assert float(value) == pytest.approx(ours, rel=1e-5)
    assert abs(ours - reference) > 0.05  # the difference is material, not rounding
    # the reference's half-probability voxels: 20 in component 2's set, each adds 0.5 to Σp and log 2
    p_ref2 = np.where(c1, 0.5, prob)
    assert (p_ref2[c1] == 0.5).sum() == 20
    assert ell(p_ref2, c2.astype(np.int64)) > ell(prob[c2 | background], y[c2 | background]) + 0.3


def test_blob_without_lesion_is_the_global_term():
    y = np.zeros(16, np.int64)
    prob = np.full(16, 0.3)
    prob[3] = 0.9  # a false positive
    logits, target = binary_logits(prob[None]), torch.from_numpy(y)[None, None, None]
    value = get("blob")(logits, target)
    assert float(value) == pytest.approx(2 * ell(prob, y), rel=1e-5)
    cc = get("cc_dice_ce")(logits, target)
    assert float(cc) == pytest.approx(ell(prob, y), rel=1e-5)


# ---------------------------------------------------------------------------------------------- CC-DiceCE


def test_cc_distant_false_positive_lands_in_the_nearest_lesions_region():
    """Lesions at 0-3 and 30-31 (Voronoi boundary at 16.5); a false positive at 20-22 is charged to region 2
    only: region 1's term is unchanged, region 2's grows."""
    y = np.zeros(34, np.int64)
    y[0:4] = 1
    y[30:32] = 1
    prob = np.where(y == 1, 0.9, 0.1)
    fp = prob.copy()
    fp[20:23] = 0.95
    idx = np.arange(34)
    r1, r2 = idx <= 16, idx >= 17
    assert (voronoi_regions(component_ids(y[None].astype(bool))[0])[0] == np.where(r1, 1, 2)).all()
    loss = get("cc_dice_ce")
    target = torch.from_numpy(y)[None, None, None]
    clean = float(loss(binary_logits(prob[None]), target))
    with_fp = float(loss(binary_logits(fp[None]), target))
    expected = (ell(fp[r1], y[r1]) + ell(fp[r2], y[r2])) / 2
    assert with_fp == pytest.approx(expected, rel=1e-5)
    assert ell(fp[r1], y[r1]) == pytest.approx(ell(prob[r1], y[r1]))
    assert with_fp - clean == pytest.approx((ell(fp[r2], y[r2]) - ell(prob[r2], y[r2])) / 2, rel=1e-5)


def test_cc_two_lesions_of_very_different_size_weigh_equally():
    y = two_lesions(big=20, small=2)
    prob = np.where(y == 1, 0.9, 0.1)
    prob[36:38] = 0.1
    idx = np.arange(40)
    r1, r2 = idx < 28, idx >= 28
    expected = (ell(prob[r1], y[r1]) + ell(prob[r2], y[r2])) / 2
    value = get("cc_dice_ce")(binary_logits(prob[None]), torch.from_numpy(y)[None, None, None])
    assert float(value) == pytest.approx(expected, rel=1e-5)
    # global Dice + CE hardly sees the missed small lesion
    assert ell(prob[r2], y[r2]) > 3 * ell(prob, y)


# ------------------------------------------------------------------------------------------- conventions


@pytest.mark.parametrize("name", ["blob", "cc_dice_ce"])
def test_multiclass_items_per_class_and_reduction_none(name):
    """Softmax over 3 classes, per-class items (B, C', 1, 1): each equals the binary computation of that
    class's channel (one class against the rest)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(2, 1, 6, 9, dtype=torch.long)
    labels[:, :, 1:3, 1:3] = 1
    labels[:, :, 4:5, 6:8] = 1
    labels[0, :, 0, 8] = 2
    logits = torch.randn(2, 3, 6, 9, generator=g)
    none = get(name, reduction="none")(logits, labels)
    assert none.shape == (2, 2, 1, 1)
    probs = torch.softmax(logits, 1)
    for c in (1, 2):
        for b in range(2):
            y = (labels[b, 0] == c).numpy().astype(np.int64)
            p = probs[b, c].double().numpy()
            ids, n = component_ids(y.astype(bool))
            if n == 0:
                expected = (2.0 if name == "blob" else 1.0) * ell(p.ravel(), y.ravel())
            elif name == "blob":
                terms = [ell(p[(ids == j) | (ids == 0)], y[(ids == j) | (ids == 0)]) for j in range(1, n + 1)]
                expected = 2 * ell(p.ravel(), y.ravel()) + sum(terms) / n
            else:
                reg = voronoi_regions(ids, n)
                expected = sum(ell(p[reg == j], y[reg == j]) for j in range(1, n + 1)) / n
            assert float(none[b, c - 1]) == pytest.approx(expected, rel=1e-4), (b, c)
    torch.testing.assert_close(get(name)(logits, labels), none.mean())
    both = get(name, include_background=True, reduction="none")(logits, labels)
    assert both.shape == (2, 3, 1, 1)


@pytest.mark.parametrize("name", ["blob", "cc_dice_ce"])
def test_precomputed_maps_equal_computed_ones_and_warn_once(name):
    g = torch.Generator().manual_seed(1)
    labels = torch.zeros(2, 1, 5, 8, 8, dtype=torch.long)
    labels[:, :, 1:3, 1:4, 1:4] = 1
    labels[1, :, 3:5, 6:8, 6:8] = 1
    labels[0, :, 4, 0, 7] = 2
    logits = torch.randn(2, 3, 5, 8, 8, generator=g)
    loss = get(name)
    onehot = torch.nn.functional.one_hot(labels[:, 0], 3).movedim(-1, 1)
    maps = instance_maps(onehot, loss.instance_maps)
    given = no_warnings(loss, logits, labels, maps)
    with pytest.warns(UserWarning, match="without instance maps"):
        computed = loss(logits, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = loss(logits, labels)  # once per module
    torch.testing.assert_close(given, computed)
    torch.testing.assert_close(given, again)


@pytest.mark.parametrize("name", ["blob", "cc_dice_ce"])
def test_multilabel_sigmoid_channels_are_independent(name):
    """Per-channel sigmoid with overlapping one-hot targets: each channel's item is its own binary problem."""
    g = torch.Generator().manual_seed(2)
    target = torch.zeros(1, 2, 6, 6)
    target[:, 0, 1:5, 1:5] = 1
    target[:, 1, 2:3, 2:3] = 1
    target[:, 1, 5, 5] = 1
    logits = torch.randn(1, 2, 6, 6, generator=g)
    none = get(name, sigmoid=True, include_background=True, reduction="none")(logits, target)
    for c in range(2):
        single = get(name, reduction="none")(logits[:, c : c + 1], target[:, c : c + 1])
        torch.testing.assert_close(none[:, c], single[:, 0], rtol=1e-5, atol=1e-6)


def test_errors_name_the_loss_and_argument():
    with pytest.raises(ValueError, match="BlobLoss: alpha"):
        get("blob", alpha=-1)
    with pytest.raises(ValueError, match="CCDiceCELoss: lambda_ce"):
        get("cc_dice_ce", lambda_ce="x")
    logits = torch.randn(1, 3, 4, 4)
    labels = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="BlobLoss: instances must have shape"):
        get("blob")(logits, labels, torch.zeros(1, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="CCDiceCELoss: instances must hold ids >= 0"):
        get("cc_dice_ce")(logits, labels, -torch.ones(1, 3, 4, 4, dtype=torch.long))


def test_gradient_flows_to_a_missed_small_lesion_as_to_a_big_one():
    """With every voxel at p = 0.5, the component term's gradient per voxel of a 2-voxel lesion is far larger
    than per voxel of a 20-voxel one (equal weight per lesion, not per voxel)."""
    y = two_lesions(big=20, small=2)
    x = torch.zeros(1, 2, 1, 40, requires_grad=True)
    get("blob", alpha=0.0)(x, torch.from_numpy(y)[None, None, None]).backward()
    grad = -x.grad[0, 1, 0]
    assert float(grad[36:38].mean()) > 2.5 * float(grad[:20].mean()) > 0
    assert math.isfinite(float(grad.sum()))
