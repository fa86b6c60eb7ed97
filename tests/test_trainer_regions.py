"""Region-based nnU-Net datasets (``regions_class_order``): sigmoid forms of the losses, ignore channel, e2e.

nnU-Net hands region datasets' targets as ``(b, R, …)`` bool one-hot regions (plus the ignore mask as an
extra last channel) and trains with per-channel sigmoid. The losses declared multi-label must equal
independent binary problems per channel (or, for GDL, the formula by hand); the others are refused with a
message that names the trainers that work.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper  # noqa: E402
from test_trainers import FACTORS, SHAPES, SPACING, make_trainer  # noqa: E402

import segbalance.trainers as trainers  # noqa: E402
from segbalance.monai_losses import get  # noqa: E402
from segbalance.monai_losses.registry import multilabel_names, supports_multilabel  # noqa: E402
from segbalance.nnunet_losses import build_nnunet_loss, deep_supervision_weights  # noqa: E402
from segbalance.trainers.configurable import LOSS_ENV  # noqa: E402
from segbalance.trainers.table import trainer_specs  # noqa: E402

SPACING_AWARE = {"boundary", "gdl_boundary", "dice_boundary", "hd_dt"}
# per-class mean losses whose one-channel (C == 1) form is the per-channel term; gdl pools the channels,
# dfl's C == 1 form is the two-class softmax (test_dfl_multilabel_is_independent_per_channel_terms)
SEPARABLE = sorted(set(multilabel_names()) - {"gdl", "gdl_boundary", "dfl"})


def region_batch(shape=(6, 8, 8), regions=3, seed=0, ignore=False):
    """Logits and overlapping bool region targets (region 1 ⊇ region 0), optionally + ignore channel."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, regions, *shape, generator=g)
    y = torch.rand(2, regions, *shape, generator=g) > 0.6
    y[:, 1] |= y[:, 0]
    if ignore:
        mask = torch.rand(2, 1, *shape, generator=g) > 0.8
        y = torch.cat([y, mask], 1)
    return x, y


def sigmoid_kwargs(name):
    kw = dict(sigmoid=True, to_onehot_y=False, include_background=True)
    if name in SPACING_AWARE:
        kw["spacing"] = (2.0, 1.0, 1.0)
    return kw


@pytest.mark.parametrize("name", SEPARABLE)
def test_multilabel_losses_are_independent_binary_problems(name):
    """Declared multi-label: the R-region loss is the mean of the R one-channel (binary sigmoid) losses."""
    x, y = region_batch()
    value = get(name, **sigmoid_kwargs(name))(x, y.float())
    per_region = [
        get(name, **sigmoid_kwargs(name))(x[:, c : c + 1], y[:, c : c + 1].float()) for c in range(3)
    ]
    torch.testing.assert_close(value, sum(per_region) / 3, rtol=1e-5, atol=1e-6)
    # and it is not what the softmax form gives on the same tensors
    assert not torch.isclose(value, get(name, **{**sigmoid_kwargs(name), "sigmoid": None})(x, y.float()))


def test_dfl_multilabel_is_independent_per_channel_terms():
    """dfl's multi-label form: each channel its own one-vs-rest term on ``z = σ(x)`` (the per-class terms
    of the paper's sum), mean over channels; independent of the other channels."""
    x, y = region_batch()
    value = get("dfl", **sigmoid_kwargs("dfl"))(x, y.float())

    def channel(c):
        z, t = torch.sigmoid(x[:, c].double()), y[:, c].double()
        return (-t * torch.log(z) - (1 - t) * torch.log1p(-z) + (t - z).abs()).mean()

    torch.testing.assert_close(value.double(), sum(channel(c) for c in range(3)) / 3, rtol=1e-5, atol=1e-6)
    x2 = x.clone()
    x2[:, 2] += 3.0  # moving one channel changes only that channel's term
    changed = get("dfl", **sigmoid_kwargs("dfl"))(x2, y.float())
    z2 = torch.sigmoid(x2[:, 2].double())
    t2 = y[:, 2].double()
    term2 = (-t2 * torch.log(z2) - (1 - t2) * torch.log1p(-z2) + (t2 - z2).abs()).mean()
    torch.testing.assert_close(changed.double(), (channel(0) + channel(1) + term2) / 3, rtol=1e-5, atol=1e-6)


def test_region_ce_equals_nnunet_bce_part_with_ignore_channel(results):
    """``ce`` on region targets = nnU-Net's BCE term of ``DC_and_BCE_loss`` (dice weight 0), with and without
    its ignore channel. With the ignore channel nnU-Net divides the channel sum by the number of valid
    voxels (not voxels × channels), so it is R × ours there; without it both are the element mean."""
    from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss

    x, y = region_batch(regions=3, ignore=True)
    dice_kwargs = {"batch_dice": False, "do_bg": True, "smooth": 1e-5, "ddp": False}
    theirs = DC_and_BCE_loss({}, dice_kwargs, weight_ce=1, weight_dice=0, use_ignore_label=True)
    ours = build_nnunet_loss("ce", has_regions=True, ignore_label=4)
    xs = x.clone().requires_grad_()
    value = ours(xs, y)
    torch.testing.assert_close(3 * value, theirs(x, y), rtol=1e-5, atol=1e-6)
    # the same as torch's BCEWithLogitsLoss on the valid voxels only
    valid = ~y[:, -1:].expand(-1, 3, *y.shape[2:])
    bce = torch.nn.BCEWithLogitsLoss()(x[valid], y[:, :-1][valid].float())
    torch.testing.assert_close(value, bce, rtol=1e-5, atol=1e-6)
    value.backward()
    assert torch.all(xs.grad[~valid] == 0) and torch.any(xs.grad[valid] != 0)
    # without an ignore label: nnU-Net's BCE term is the element mean, ours too
    theirs = DC_and_BCE_loss({}, dice_kwargs, weight_ce=1, weight_dice=0)
    torch.testing.assert_close(build_nnunet_loss("ce", has_regions=True)(x, y[:, :-1]), theirs(x, y[:, :-1]))


def gdl_by_hand(x, y, valid=None, smooth=1e-5):
    """Generalized Dice with per-channel sigmoid, ``w_c = 1/(Σ g_c)²`` (absent: the largest weight)."""
    z, g = torch.sigmoid(x.double()), y.double()
    if valid is not None:
        z, g = z * valid.unsqueeze(1), g * valid.unsqueeze(1)
    dims = tuple(range(2, x.ndim))
    sum_g = g.sum(dims)
    w = 1.0 / sum_g**2
    w = torch.where(torch.isinf(w), w[~torch.isinf(w)].max(), w)
    numer = 2 * (w * (z * g).sum(dims)).sum(1) + smooth
    denom = (w * (z + g).sum(dims)).sum(1) + smooth
    return (1 - numer / denom).mean()


def test_region_gdl_trainer_equals_sigmoid_gdl_by_hand_with_ignore_channel(results):
    trainer = make_trainer(trainers.nnUNetTrainerGDL, ignore=True, regions=True)
    assert trainer.label_manager.has_regions and trainer.label_manager.ignore_label == 3
    loss = trainer._build_loss()
    assert isinstance(loss, DeepSupervisionWrapper)
    logits, targets = [], []
    for i, shape in enumerate(SHAPES):
        x, y = region_batch(shape, regions=2, seed=i, ignore=True)  # 2 regions: whole, lesion
        logits.append(x.half().requires_grad_())
        targets.append(y)
    value = loss(logits, targets)
    expected = sum(
        w * gdl_by_hand(x.float(), t[:, :-1], ~t[:, -1])
        for w, x, t in zip(deep_supervision_weights(4), logits, targets)
        if w != 0
    )
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-6)
    value.backward()
    # ignored voxels get no gradient
    mask = targets[0][:, -1:].expand_as(logits[0])
    assert torch.all(logits[0].grad[mask] == 0) and torch.any(logits[0].grad[~mask] != 0)


@pytest.mark.parametrize(
    "name", [n for n, s in trainer_specs().items() if supports_multilabel(s.loss, s.kwargs)]
)
def test_every_multilabel_trainer_builds_and_runs_on_regions(results, name):
    trainer = make_trainer(getattr(trainers, name), ignore=True, regions=True)
    loss = trainer._build_loss()
    logits = [region_batch(s, 2, seed=i, ignore=True)[0].requires_grad_() for i, s in enumerate(SHAPES)]
    targets = [region_batch(s, 2, seed=i, ignore=True)[1] for i, s in enumerate(SHAPES)]
    value = loss(logits, targets)
    assert torch.isfinite(value)
    value.backward()
    assert torch.isfinite(logits[0].grad).all()
    # the top scale equals the registry loss's sigmoid form with the ignore mask applied by hand
    spec = trainer_specs()[name]
    kw = {**spec.kwargs, **sigmoid_kwargs(spec.loss)}
    if spec.loss in SPACING_AWARE:
        kw["spacing"] = tuple(s * f for s, f in zip(SPACING, FACTORS[0]))
    ref = get(spec.loss, **kw)
    x, t = logits[0].detach(), targets[0]
    valid = ~t[:, -1]
    p = ref.prepare(x, t[:, :-1].float())
    p.valid, p.onehot = valid, p.onehot * valid.unsqueeze(1)
    trainer.enable_deep_supervision = False
    single = trainer._build_loss()
    torch.testing.assert_close(single(x, t), ref.forward_prepared(p))


def test_region_targets_without_ignore_label(results):
    x, y = region_batch(regions=2)
    loss = build_nnunet_loss("tversky", has_regions=True)
    expected = get("tversky", sigmoid=True, include_background=True)(x, y.float())
    torch.testing.assert_close(loss(x, y), expected)


def test_softmax_trainers_refuse_regions_naming_the_alternatives(results, monkeypatch):
    refused = [n for n, s in trainer_specs().items() if not supports_multilabel(s.loss, s.kwargs)]
    working = [n for n, s in trainer_specs().items() if supports_multilabel(s.loss, s.kwargs)]
    assert "nnUNetTrainerDCE" in refused and "nnUNetTrainerGDL" in working
    for name in ("DFL", "Focal", "Recall", "DFLDice", "GDL"):
        assert f"nnUNetTrainer{name}" in working
    for name in refused:
        with pytest.raises(ValueError, match="regions_class_order") as info:
            make_trainer(getattr(trainers, name), regions=True)._build_loss()
        message = str(info.value)
        assert "Dataset990_Unit" in message and all(w in message for w in working), message
    monkeypatch.setenv(LOSS_ENV, '{"name": "ce_kl"}')
    with pytest.raises(ValueError, match="nnUNetTrainerSegBalance with one of the losses .*gdl"):
        make_trainer(trainers.nnUNetTrainerSegBalance, regions=True)._build_loss()
    monkeypatch.setenv(LOSS_ENV, '{"name": "compound", "kwargs": {"terms": {"dice": 1, "combo": 1}}}')
    assert make_trainer(trainers.nnUNetTrainerSegBalance, regions=True)._build_loss() is not None


# ---------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["nnUNetTrainerBoundary_debug", "nnUNetTrainerFocal_debug"])
def test_region_dataset_plan_train_predict(tmp_path: Path, trainer: str) -> None:
    """BraTS-style regions (whole = {1, 2}, lesion = {2}) through plan → preprocess → train → predict."""
    sitk = pytest.importorskip("SimpleITK")
    import test_nnunet_e2e as e2e

    dataset_id, dataset = 986, "Dataset986_SegBalanceRegions"
    labels = {"background": 0, "whole": [1, 2], "lesion": 2}
    folder = e2e.write_raw_dataset(
        tmp_path / "raw", dataset=dataset, labels=labels, extra={"regions_class_order": [1, 2]}
    )
    out, fold = e2e.plan_train_predict(tmp_path, dataset_id, dataset, folder, trainer)
    train_log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "regions True" in train_log
    if "Boundary" in trainer:
        assert "alpha = 0.02" in train_log
    for i in range(2):
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"case{i:03d}.nii.gz")))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / f"case{i:03d}.nii.gz")))
        assert pred.shape == truth.shape and set(np.unique(pred)) <= {0, 1, 2}
        for region in ((1, 2), (2,)):
            p, t = np.isin(pred, region), np.isin(truth, region)
            value = 1.0 if p.sum() + t.sum() == 0 else 2 * (p & t).sum() / (p.sum() + t.sum())
            assert 0.0 <= value <= 1.0
    assert json.loads((folder / "dataset.json").read_text())["regions_class_order"] == [1, 2]
    assert os.path.isdir(fold)
