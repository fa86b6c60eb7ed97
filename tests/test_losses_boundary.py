"""Boundary-family losses: boundary, hd_dt, dpce, gdl_boundary / dice_boundary and their scheduler.

References are computed independently with scipy (LIVIAETS / Karimi / Caliva formulas) or taken from
MONAI's ``HausdorffDTLoss`` where its definition coincides with ours.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from segbalance.loss_table import synthetic_batch
from segbalance.monai_losses import get, registry
from segbalance.monai_losses.distance import signed_distance_map
from segbalance.monai_losses.schedules import BoundaryWeightScheduler, set_schedulers_epoch

SPACING = (2.5, 0.8, 0.8)


def onehot_of(labels: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels[:, 0], k).movedim(-1, 1).float()


def scipy_signed(pos: np.ndarray, spacing) -> np.ndarray:
    if not pos.any() or pos.all():
        return np.zeros(pos.shape)
    neg = ~pos
    return (
        ndimage.distance_transform_edt(neg, sampling=spacing) * neg
        - (ndimage.distance_transform_edt(pos, sampling=spacing) - min(spacing)) * pos
    )


def scipy_field(pos: np.ndarray, spacing) -> np.ndarray:
    if not pos.any() or pos.all():
        return np.zeros(pos.shape)
    return ndimage.distance_transform_edt(pos, sampling=spacing) + ndimage.distance_transform_edt(
        ~pos, sampling=spacing
    )


def per_item(fn, masks: torch.Tensor, spacing) -> torch.Tensor:
    out = np.stack([[fn(m.numpy() > 0.5, spacing) for m in row] for row in masks])
    return torch.from_numpy(out).float()


def batch(size=14, classes=3, seed=0):
    return synthetic_batch(batch=2, num_classes=classes, size=size, dims=3, seed=seed)


# --- boundary loss -------------------------------------------------------------------------------


@pytest.mark.parametrize("include_background", [False, True])
def test_boundary_loss_is_mean_of_phi_times_softmax(include_background):
    logits, labels = batch()
    phi = per_item(scipy_signed, onehot_of(labels, 3), SPACING)
    probs = torch.softmax(logits, 1)
    channels = slice(0, None) if include_background else slice(1, None)
    expected = (phi[:, channels] * probs[:, channels]).mean()
    loss = get("boundary", spacing=SPACING, include_background=include_background)
    torch.testing.assert_close(loss(logits, labels), expected, rtol=1e-5, atol=1e-6)
    none = get("boundary", spacing=SPACING, include_background=include_background, reduction="none")
    per = (phi[:, channels] * probs[:, channels]).flatten(2).mean(-1)
    per = per.reshape(per.shape + (1,) * (logits.ndim - 2))  # (B, C', 1, …) as MONAI's region losses
    torch.testing.assert_close(none(logits, labels), per, rtol=1e-5, atol=1e-6)


def test_boundary_loss_is_negative_at_its_optimum_and_its_gradient_is_phi():
    _, labels = batch()
    target = onehot_of(labels, 3)
    loss = get("boundary", spacing=SPACING, softmax=False, sigmoid=False)  # inputs are probabilities
    phi = signed_distance_map(target, SPACING)
    best = loss(target, labels)
    assert best < 0
    torch.testing.assert_close(best, (phi[:, 1:] * target[:, 1:]).mean())
    # any other probabilities score higher; the gradient wrt the probabilities is φ / (B · K' · N)
    probs = torch.softmax(torch.randn(target.shape), 1).requires_grad_(True)
    value = loss(probs, labels)
    assert value > best
    value.backward()
    n = target[:, 1:].numel()
    torch.testing.assert_close(probs.grad[:, 1:], phi[:, 1:] / n)
    assert (probs.grad[:, 0] == 0).all()


def test_boundary_binary_sigmoid_equals_two_class_softmax():
    logits, labels = synthetic_batch(batch=2, num_classes=2, size=12, dims=3)
    x = logits[:, 1:] - logits[:, :1]  # softmax([a, b])[1] = sigmoid(b − a)
    a = get("boundary", spacing=SPACING)(x, labels.float())
    b = get("boundary", spacing=SPACING)(logits, labels)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --- HD-DT loss ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ours, theirs",
    [
        ({}, {}),
        ({"include_background": True}, {"include_background": True}),
        ({"batch": True}, {"batch": True}),
        ({"alpha": 1.0, "reduction": "sum"}, {"alpha": 1.0, "reduction": "sum"}),
    ],
    ids=["default", "with-background", "batch", "alpha1-sum"],
)
def test_hd_dt_equals_monai_hausdorff_dt_loss(ours, theirs):
    from monai.losses import HausdorffDTLoss

    logits, labels = batch(size=16)
    expected = HausdorffDTLoss(**{"to_onehot_y": True, "softmax": True, **theirs})(logits, labels)
    torch.testing.assert_close(get("hd_dt", **ours)(logits, labels), expected, rtol=1e-5, atol=1e-5)


def test_hd_dt_equals_monai_binary_sigmoid_and_reduction_none():
    from monai.losses import HausdorffDTLoss

    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 1, 12, 13, 11, generator=g)
    target = (torch.rand(2, 1, 12, 13, 11, generator=g) > 0.6).float()
    expected = HausdorffDTLoss(sigmoid=True, reduction="none")(logits, target)
    ours = get("hd_dt", reduction="none")(logits, target)
    torch.testing.assert_close(ours, expected.reshape(ours.shape), rtol=1e-5, atol=1e-5)


def test_hd_dt_with_spacing_is_karimi_formula_and_gradient_flows_only_through_probabilities():
    logits, labels = batch()
    target = onehot_of(labels, 3)
    probs = torch.softmax(logits, 1).requires_grad_(True)
    loss = get("hd_dt", spacing=SPACING, softmax=False, sigmoid=False)
    value = loss(probs, labels)
    value.backward()
    d_g = per_item(scipy_field, target[:, 1:], SPACING)
    d_s = per_item(scipy_field, probs.detach()[:, 1:], SPACING)
    weight = d_g**2 + d_s**2
    error = probs.detach()[:, 1:] - target[:, 1:]
    torch.testing.assert_close(value, (error**2 * weight).mean(), rtol=1e-5, atol=1e-5)
    # d_S is a constant of the step: dL/ds = 2 (s − g)(d_G² + d_S²) / (B·K'·N)
    torch.testing.assert_close(probs.grad[:, 1:], 2 * error * weight / error.numel(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["boundary", "hd_dt", "dpce"])
@pytest.mark.parametrize("case", ["empty-target", "full-target", "empty-prediction", "full-prediction"])
def test_empty_and_full_masks_give_finite_values_and_gradients(name, case):
    shape = (2, 1, 8, 9, 7)
    labels = torch.zeros(shape, dtype=torch.long)
    if case == "full-target":
        labels.fill_(1)
    else:
        labels[:, :, 2:5, 3:6, 2:4] = 1
    logits = torch.randn(2, 2, 8, 9, 7)
    if case == "empty-prediction":
        logits[:, 0] += 20
    if case == "full-prediction":
        logits[:, 1] += 20
    x = logits.requires_grad_(True)
    value = get(name, spacing=SPACING)(x, labels)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()


def test_hd_dt_empty_prediction_is_weighted_by_target_distances_only():
    labels = torch.zeros(1, 1, 1, 8, dtype=torch.long)
    labels[..., 2:5] = 1
    logits = torch.zeros(1, 2, 1, 8)
    logits[:, 0] = 5.0  # nothing predicted: d_S = 0
    s = torch.sigmoid(torch.tensor(-5.0))
    d_g = torch.tensor([2.0, 1, 1, 2, 1, 1, 2, 3])  # distance to the other side
    g = labels[0, 0, 0].float()
    expected = ((s - g) ** 2 * d_g**2).mean()
    torch.testing.assert_close(get("hd_dt")(logits, labels), expected)


# --- distance-penalised CE -----------------------------------------------------------------------


def junma_penalty(pos: np.ndarray) -> np.ndarray:
    """JunMa11/SegLoss ``compute_edts_forPenalizedLoss`` for one binary mask (unit spacing)."""
    neg = ~pos
    pos_edt = ndimage.distance_transform_edt(pos)
    pos_edt = (pos_edt.max() - pos_edt) * pos
    neg_edt = ndimage.distance_transform_edt(neg)
    neg_edt = (neg_edt.max() - neg_edt) * neg
    return pos_edt / pos_edt.max() + neg_edt / neg_edt.max()


def test_dpce_binary_applies_the_penalty_the_public_code_drops():
    logits, labels = synthetic_batch(batch=2, num_classes=2, size=12, dims=3)
    ce = torch.nn.functional.cross_entropy(logits, labels[:, 0], reduction="none")
    penalty = torch.from_numpy(np.stack([junma_penalty(m.numpy() > 0) for m in labels[:, 0]])).float()
    expected = ((1 + penalty) * ce).mean()
    value = get("dpce")(logits, labels)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    assert value > ce.mean() * 1.05  # the weighting matters (JunMa11's code returns ce.mean())


def test_dpce_multiclass_with_spacing():
    logits, labels = batch()
    target = onehot_of(labels, 3)
    ce = torch.nn.functional.cross_entropy(logits, labels[:, 0], reduction="none")
    penalty = torch.zeros_like(ce)
    for b in range(2):
        for c in range(3):
            pos = target[b, c].numpy() > 0.5
            if pos.any() and not pos.all():
                d = ndimage.distance_transform_edt(pos, sampling=SPACING)
                span = d[pos].max() - d[pos].min()  # 0: the class is all boundary, penalty 1
                inverted = (d[pos].max() - d) / span if span > 0 else np.ones_like(d)
                penalty[b][torch.from_numpy(pos)] = torch.from_numpy(inverted)[pos].float()
    expected = ((1 + penalty) * ce).mean()
    torch.testing.assert_close(get("dpce", spacing=SPACING)(logits, labels), expected, rtol=1e-5, atol=1e-6)


# --- precomputed distance maps -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["boundary", "hd_dt", "dpce"])
@pytest.mark.parametrize("classes", [1, 3], ids=["binary", "3-class"])
def test_precomputed_dist_equals_on_the_fly(name, classes):
    if classes == 1:
        logits, labels = synthetic_batch(batch=2, num_classes=2, size=12, dims=3)
        logits, target = logits[:, 1:] - logits[:, :1], labels.float()
        dist = signed_distance_map(target, SPACING)
    else:
        logits, target = batch(size=12)
        dist = signed_distance_map(onehot_of(target, 3), SPACING)
    loss = get(name, spacing=SPACING)
    torch.testing.assert_close(loss(logits, target, dist=dist), loss(logits, target), rtol=1e-5, atol=1e-6)


def test_precomputed_dist_from_the_monai_transform():
    from monai.data import MetaTensor
    from monai.transforms import Compose

    from segbalance.preprocessing.transforms import SignedDistanceMapd

    logits, labels = batch(size=12)
    affine = torch.diag(torch.tensor([*SPACING, 1.0]))
    pipeline = Compose([SignedDistanceMapd("label", num_classes=3)])
    dist = torch.stack(
        [pipeline({"label": MetaTensor(y, affine=affine)})["dist"].as_tensor() for y in labels]
    )
    loss = get("boundary", spacing=SPACING)
    torch.testing.assert_close(loss(logits, labels, dist=dist), loss(logits, labels), rtol=1e-5, atol=1e-6)


def test_bad_dist_names_the_argument():
    logits, labels = batch(size=8)
    loss = get("boundary")
    with pytest.raises(ValueError, match="dist"):
        loss(logits, labels, dist=torch.zeros(2, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="dist"):
        loss(logits, labels, dist=torch.full((2, 3, 8, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="spacing"):
        get("hd_dt", spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        get("boundary", spacing=(1.0, 1.0))(logits, labels)  # 2 values for a 3D input


# --- rebalancing schedule and the region + boundary pairs ---------------------------------------


def test_scheduler_schedule_cap_and_state():
    s = BoundaryWeightScheduler(start=0.01, step_size=0.01, max_alpha=0.05)
    assert [s.alpha] + [s.step() for _ in range(6)] == [0.01, 0.02, 0.03, 0.04, 0.05, 0.05, 0.05]
    default = BoundaryWeightScheduler()
    for _ in range(500):
        default.step()
    assert default.alpha == 0.99
    resumed = BoundaryWeightScheduler()
    resumed.load_state_dict(s.state_dict())
    assert resumed.alpha == 0.05 and resumed.epoch == 6 and resumed.max_alpha == 0.05
    with pytest.raises(ValueError, match="max_alpha"):
        BoundaryWeightScheduler(max_alpha=1.5)
    with pytest.raises(ValueError, match="start"):
        BoundaryWeightScheduler(start=0.5, max_alpha=0.1)


@pytest.mark.parametrize("name, region", [("gdl_boundary", "gdl"), ("dice_boundary", "dice")])
def test_region_boundary_pair_is_rebalanced_sum(name, region):
    try:
        region_cls = registry.loss_class(region)
    except ValueError:
        pytest.skip(f"region loss {region!r} is not registered yet")
    logits, labels = batch()
    loss = get(name, spacing=SPACING)
    boundary = get("boundary", spacing=SPACING)(logits, labels)
    region_value = region_cls()(logits, labels)
    torch.testing.assert_close(
        loss(logits, labels), 0.99 * region_value + 0.01 * boundary, rtol=1e-5, atol=1e-6
    )
    for _ in range(9):
        loss.scheduler.step()
    torch.testing.assert_close(
        loss(logits, labels), 0.9 * region_value + 0.1 * boundary, rtol=1e-5, atol=1e-6
    )
    # the schedule is a function of the epoch: a fresh module set to epoch 9 has the same α, and the
    # module's state_dict carries no schedule state
    restored = get(name, spacing=SPACING)
    assert set_schedulers_epoch(restored, 9) == [pytest.approx(0.1)]
    assert restored.alpha == pytest.approx(0.1)
    assert not any("extra_state" in key for key in loss.state_dict())


def test_region_boundary_combination_reductions_and_state_with_a_stand_in_region():
    """The pairing's arithmetic, independent of which region loss is registered (CE stands in)."""
    from segbalance.monai_losses.boundary import RegionBoundaryLoss

    class CEBoundary(RegionBoundaryLoss):
        region = "ce"

    logits, labels = batch()
    loss = CEBoundary(spacing=SPACING, alpha_start=0.2, alpha_step=0.3, alpha_max=0.7)
    ce = get("ce", reduction="none")(logits, labels).sum(1).flatten(1).mean(1)
    bl = get("boundary", spacing=SPACING, reduction="none")(logits, labels).flatten(1).mean(1)
    torch.testing.assert_close(loss(logits, labels), (0.8 * ce + 0.2 * bl).mean())
    assert loss.scheduler.step() == pytest.approx(0.5) and loss.scheduler.step() == pytest.approx(0.7)
    assert loss.scheduler.step() == pytest.approx(0.7)
    per_image = CEBoundary(spacing=SPACING, alpha_start=0.7, alpha_step=0.0, reduction="none")(logits, labels)
    torch.testing.assert_close(per_image.flatten(), 0.3 * ce + 0.7 * bl)
    total = CEBoundary(spacing=SPACING, alpha_start=0.7, alpha_step=0.0, reduction="sum")(logits, labels)
    torch.testing.assert_close(total, per_image.sum())
    restored = CEBoundary(spacing=SPACING, alpha_start=0.2, alpha_step=0.3, alpha_max=0.7)
    set_schedulers_epoch(restored, 3)
    assert restored.alpha == pytest.approx(0.7) and restored.scheduler.epoch == 3
    dist = signed_distance_map(onehot_of(labels, 3), SPACING)
    torch.testing.assert_close(loss(logits, labels, dist=dist), loss(logits, labels))
