"""Conventions and edge cases every registered loss must honour (parametrised over the registry)."""

from __future__ import annotations

import pytest
import torch

from segbalance.loss_table import EXAMPLE_KWARGS, synthetic_batch
from segbalance.monai_losses import get, names

ALL = names()


def make(name: str, **kwargs):
    return get(name, **{**EXAMPLE_KWARGS.get(name, {}), **kwargs})


def labels_with(values: list[int], shape=(2, 1, 6, 7, 5)) -> torch.Tensor:
    """A label map using exactly ``values`` (cycled over the voxels)."""
    n = int(torch.tensor(shape).prod())
    flat = torch.tensor(values).repeat(n // len(values) + 1)[:n]
    return flat[torch.randperm(n)].reshape(shape)


def check_finite_backward(loss_fn, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    x = logits.clone().requires_grad_(True)
    value = loss_fn(x, target)
    assert value.ndim == 0, f"default reduction must give a scalar, got shape {tuple(value.shape)}"
    assert value.dtype == torch.float32
    assert torch.isfinite(value), f"loss is {value}"
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    return value.detach()


def test_registry_lists_every_loss_of_the_issue():
    expected = {
        "ce", "wce", "topk", "focal", "dce", "dfl", "recall", "cb_ce", "ohem",
        "dice", "logdice", "iou", "tversky", "focal_tversky", "asym", "gdl", "pgdl", "ss", "lovasz",
        "ce_l1", "ce_kl", "ce_dicebias", "marginal_l1", "marginal_kl",
        "dice_ce", "logdice_ce", "combo", "explog", "compound",
        "boundary", "hd_dt", "dpce", "gdl_boundary", "dice_boundary",
    }  # fmt: skip
    assert expected <= set(ALL), f"missing: {sorted(expected - set(ALL))}"


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="known losses: .*dfl"):
        get("no_such_loss")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dims", [2, 3])
def test_runs_2d_3d_with_finite_gradients(name, dims):
    logits, labels = synthetic_batch(batch=2, num_classes=3, size=12, dims=dims)
    check_finite_backward(make(name), logits, labels)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    "values", [[0], [1], [0, 1], [0, 2]], ids=["all-background", "one-class", "absent-class", "absent-middle"]
)
def test_degenerate_label_sets(name, values):
    target = labels_with(values)
    logits = torch.randn(2, 3, 6, 7, 5)
    check_finite_backward(make(name), logits, target)


@pytest.mark.parametrize("name", ALL)
def test_one_hot_target_equals_label_map(name):
    logits, labels = synthetic_batch(batch=2, num_classes=3, size=10, dims=3)
    onehot = torch.nn.functional.one_hot(labels[:, 0], 3).movedim(-1, 1)
    a = make(name)(logits, labels)
    b = make(name)(logits, onehot)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_binary_sigmoid(name):
    logits = torch.randn(2, 1, 8, 8, 6)
    target = (torch.rand(2, 1, 8, 8, 6) > 0.7).float()
    check_finite_backward(make(name), logits, target)


@pytest.mark.parametrize("name", ALL)
def test_ignored_voxels_do_not_matter(name):
    """Changing logits where the target holds ``ignore_index`` leaves loss and other gradients unchanged."""
    logits, labels = synthetic_batch(batch=2, num_classes=3, size=10, dims=3)
    ignore = torch.rand(labels.shape) < 0.2
    target = torch.where(ignore, torch.full_like(labels, 3), labels)
    loss_fn = make(name, ignore_index=3)
    x1 = logits.clone().requires_grad_(True)
    v1 = loss_fn(x1, target)
    v1.backward()
    changed = torch.where(ignore.expand_as(logits), torch.randn_like(logits) * 5, logits)
    x2 = changed.clone().requires_grad_(True)
    v2 = loss_fn(x2, target)
    v2.backward()
    assert torch.isfinite(v1)
    torch.testing.assert_close(v1, v2, rtol=1e-5, atol=1e-6)
    keep = ~ignore.expand_as(logits)
    torch.testing.assert_close(x1.grad[keep], x2.grad[keep], rtol=1e-4, atol=1e-6)
    assert torch.all(x1.grad[~keep] == 0)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits(name, dtype):
    logits, labels = synthetic_batch(batch=2, num_classes=3, size=10, dims=3)
    reference = make(name)(logits.to(dtype).float(), labels)
    value = check_finite_backward(make(name), logits.to(dtype), labels)
    torch.testing.assert_close(value, reference.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_under_autocast_computes_in_float32(name):
    logits, labels = synthetic_batch(batch=1, num_classes=3, size=10, dims=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = make(name)(logits, labels)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, make(name)(logits, labels), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_bad_inputs_name_the_argument(name):
    loss_fn = make(name)
    logits, labels = synthetic_batch(batch=1, num_classes=3, size=8, dims=3)
    bad = logits.clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="logits"):
        loss_fn(bad, labels)
    with pytest.raises(ValueError, match="target"):
        loss_fn(logits, labels[..., :4])
    with pytest.raises(ValueError, match="target"):
        loss_fn(logits, labels + 3)
    with pytest.raises(ValueError, match="logits"):
        loss_fn(logits[0], labels[0])


@pytest.mark.parametrize("name", ALL)
def test_reductions_are_consistent(name):
    """``none`` keeps per-item values whose mean is ``mean`` and whose sum is ``sum`` (no ignored voxels);
    per-voxel losses keep per-class terms, whose class sum is the voxel's loss."""
    logits, labels = synthetic_batch(batch=2, num_classes=3, size=8, dims=3)
    mean = make(name)(logits, labels)
    total = make(name, reduction="sum")(logits, labels)
    loss = make(name, reduction="none")
    none = loss(logits, labels)
    assert none.ndim >= 1, "reduction='none' must keep a per-item dimension"
    assert torch.isfinite(none).all()
    per_item = none.sum(1) if loss.none_style == "voxel" else none
    torch.testing.assert_close(per_item.mean(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(none.sum(), total, rtol=1e-5, atol=1e-5)
