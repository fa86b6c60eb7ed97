"""segbalance.nnunet_losses: nnU-Net's deep-supervision weights, ignore label, regions, spacing per scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("nnunetv2")

from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper  # noqa: E402
from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss  # noqa: E402

from segbalance.monai_losses import get, registry  # noqa: E402
from segbalance.monai_losses.schedules import BoundaryWeightScheduler, set_schedulers_epoch  # noqa: E402
from segbalance.nnunet_losses import (  # noqa: E402
    ScaleAwareLoss,
    build_nnunet_loss,
    check_regions_supported,
    deep_supervision_weights,
    loss_schedulers,
)

SCALES = [[1, 1, 1], [1, 0.5, 0.5], [0.5, 0.25, 0.25], [0.25, 0.125, 0.125]]
SHAPES = [(8, 16, 16), (8, 8, 8), (4, 4, 4), (2, 2, 2)]


def per_scale_inputs(num_classes=3, ignore_label=None, dtype=torch.float32, batch=2):
    """Logits and (b, 1, …) int16 label maps per scale, as nnU-Net's dataloader and network give them."""
    g = torch.Generator().manual_seed(1)
    logits = [torch.randn(batch, num_classes, *s, generator=g).to(dtype).requires_grad_() for s in SHAPES]
    top = num_classes + (1 if ignore_label is not None else 0)
    targets = [torch.randint(0, top, (batch, 1, *s), generator=g).to(torch.int16) for s in SHAPES]
    return logits, targets


def test_weights_hand_values_and_ddp_safeguard():
    assert deep_supervision_weights(4).tolist() == pytest.approx([4 / 7, 2 / 7, 1 / 7, 0.0])
    ddp = deep_supervision_weights(4, is_ddp=True)
    raw = np.array([1, 0.5, 0.25, 1e-6])
    assert ddp.tolist() == pytest.approx((raw / raw.sum()).tolist(), rel=1e-12)
    assert deep_supervision_weights(4, is_ddp=True, compiled=True)[-1] == 0.0
    assert deep_supervision_weights(1).tolist() == [1.0]
    with pytest.raises(ValueError, match="num_scales"):
        deep_supervision_weights(0)


def test_deep_supervision_value_is_weighted_sum_of_cross_entropies():
    logits, targets = per_scale_inputs()
    loss = build_nnunet_loss("ce", deep_supervision_scales=SCALES)
    assert isinstance(loss, DeepSupervisionWrapper)
    value = loss(logits, targets)
    w = [4 / 7, 2 / 7, 1 / 7, 0.0]
    expected = sum(wi * F.cross_entropy(x, t[:, 0].long()) for wi, x, t in zip(w, logits, targets))
    torch.testing.assert_close(value, expected)
    value.backward()
    assert logits[-1].grad is None  # weight 0: nnU-Net skips the lowest output


def test_without_deep_supervision_is_the_plain_loss():
    logits, targets = per_scale_inputs()
    loss = build_nnunet_loss("ce", deep_supervision_scales=None)
    torch.testing.assert_close(
        loss(logits[0], targets[0]), F.cross_entropy(logits[0], targets[0][:, 0].long())
    )


def test_ignore_label_matches_nnunet_robust_ce():
    ignore = 3  # highest label + 1, no output channel
    logits, targets = per_scale_inputs(ignore_label=ignore)
    assert any(bool((t == ignore).any()) for t in targets)
    ours = build_nnunet_loss("ce", ignore_label=ignore, deep_supervision_scales=SCALES)
    theirs = DeepSupervisionWrapper(RobustCrossEntropyLoss(ignore_index=ignore), deep_supervision_weights(4))
    torch.testing.assert_close(ours(logits, targets), theirs(logits, targets))


def test_fp16_logits_give_float32_loss_close_to_float32():
    logits32, targets = per_scale_inputs()
    logits16 = [x.detach().half().requires_grad_() for x in logits32]
    loss = build_nnunet_loss("ce", deep_supervision_scales=SCALES)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v16 = loss(logits16, targets)
    assert v16.dtype == torch.float32
    v32 = loss([x.detach().half().float() for x in logits32], targets)
    torch.testing.assert_close(v16, v32)
    v16.backward()
    assert all(torch.isfinite(x.grad).all() for x in logits16[:3])


def test_softmax_losses_refused_for_regions_naming_the_setting():
    with pytest.raises(ValueError, match="regions_class_order") as info:
        check_regions_supported("dce", dataset_name="dataset 'Dataset001_Brats'")
    message = str(info.value)
    assert "Dataset001_Brats" in message
    assert all(n in message for n in ("gdl", "ce", "focal", "dfl", "recall"))
    with pytest.raises(ValueError, match="region-based"):
        build_nnunet_loss("ce_l1", has_regions=True)
    check_regions_supported("compound", {"terms": {"dice": 1, "tversky": 1}})
    check_regions_supported("compound", {"terms": {"dice": 1, "focal": 1}})
    with pytest.raises(ValueError, match="region-based"):
        check_regions_supported("compound", {"terms": {"dice": 1, "dce": 1}})


def region_inputs(regions=2, ignore=True):
    """Logits and nnU-Net region targets per scale: bool (b, R, …) plus the ignore mask as last channel."""
    g = torch.Generator().manual_seed(2)
    logits = [torch.randn(2, regions, *s, generator=g).requires_grad_() for s in SHAPES]
    targets = []
    for s in SHAPES:
        y = torch.rand(2, regions + ignore, *s, generator=g) > 0.5
        y[:, 1] |= y[:, 0]  # overlapping regions (whole ⊇ core)
        if ignore:
            y[:, -1] = torch.rand(2, *s, generator=g) > 0.8
        targets.append(y)
    return logits, targets


def test_region_dice_with_ignore_channel_matches_nnunet_soft_dice():
    """nnU-Net's region Dice (sigmoid, do_bg, loss_mask = ~ignore channel) is −mean Dice; ours is 1 + it."""
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    logits, targets = region_inputs()
    ours = build_nnunet_loss("dice", ignore_label=3, has_regions=True, deep_supervision_scales=SCALES)
    nnunet_dice = MemoryEfficientSoftDiceLoss(apply_nonlin=torch.sigmoid, do_bg=True, smooth=1e-5, ddp=False)
    expected = sum(
        w * (1 + nnunet_dice(x, t[:, :-1], loss_mask=~t[:, -1:]))
        for w, x, t in zip(deep_supervision_weights(4), logits, targets)
        if w != 0
    )
    torch.testing.assert_close(ours(logits, targets), expected)


def test_spacing_per_scale_is_pooling_factor_times_spacing():
    spacing = (2.5, 0.8, 0.8)
    logits, targets = per_scale_inputs()
    targets = [(t > 0).to(torch.int16) * t for t in targets]
    loss = build_nnunet_loss(
        "boundary", deep_supervision_scales=SCALES, spacing=spacing, patch_size=SHAPES[0]
    )
    inner = loss.loss
    assert isinstance(inner, ScaleAwareLoss)
    factors = [(1, 1, 1), (1, 2, 2), (2, 4, 4), (4, 8, 8)]
    for f, shape in zip(factors, SHAPES):
        assert inner.spacing_for_shape(shape) == pytest.approx(tuple(s * k for s, k in zip(spacing, f)))
    expected = sum(
        w * get("boundary", spacing=tuple(s * k for s, k in zip(spacing, f)))(x, t)
        for w, f, x, t in zip(deep_supervision_weights(4), factors, logits, targets)
    )
    torch.testing.assert_close(loss(logits, targets), expected)
    # the per-scale spacing matters: the base spacing at every scale gives another value
    wrong = sum(
        w * get("boundary", spacing=spacing)(x, t)
        for w, x, t in zip(deep_supervision_weights(4), logits, targets)
    )
    assert not torch.allclose(loss(logits, targets), wrong)


def test_spacing_aware_loss_needs_spacing():
    with pytest.raises(ValueError, match="spacing"):
        build_nnunet_loss("boundary", deep_supervision_scales=SCALES)


class _ScheduledLoss(torch.nn.Module):
    """Stand-in for a boundary pairing: a spacing-aware loss with a per-epoch scheduler."""

    def __init__(self, spacing=None, ignore_index=None):
        super().__init__()
        self.spacing = spacing
        self.scheduler = BoundaryWeightScheduler()

    def forward(self, logits, target):
        return self.scheduler.alpha * logits.float().mean() * 0 + self.scheduler.alpha


def test_scales_share_one_scheduler_set_from_the_epoch(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "_test_scheduled", _ScheduledLoss)
    loss = build_nnunet_loss(
        "_test_scheduled", deep_supervision_scales=SCALES, spacing=(1, 1, 1), patch_size=SHAPES[0]
    )
    logits, targets = per_scale_inputs()
    inner = loss.loss
    assert len(inner.losses) == 4  # one instance per deep-supervision scale, built up front
    loss(logits, targets)
    assert len(inner.losses) == 4
    schedulers = loss_schedulers(loss)
    assert len(schedulers) == 1
    assert set_schedulers_epoch(loss, 2) == [pytest.approx(0.03)]
    assert all(m.scheduler.alpha == pytest.approx(0.03) for m in inner.losses.values())
    assert float(loss(logits, targets).detach()) == pytest.approx(0.03)  # Σ w_i · α with Σ w_i = 1


def test_docstring_examples():
    import doctest

    import segbalance.nnunet_losses as package
    from segbalance.nnunet_losses import deep_supervision

    for module in (package, deep_supervision):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0
