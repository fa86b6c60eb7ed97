"""segbalance.evaluation.components: per-component Dice and NSD in Voronoi regions, equal to MONAI's
``DiceMetric(per_component=True)`` and to the CCMetrics package (test-only reference, skipped when absent)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from segbalance.evaluation.components import per_component_metrics, voronoi_regions


def _case(seed: int, shape=(14, 30, 26)):
    """Several GT blobs; a prediction that shifts, shrinks, misses and adds blobs, touching the border."""
    rng = np.random.default_rng(seed)
    gt = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.56
    pred = np.roll(gt, int(rng.integers(-2, 3)), axis=2) & (rng.random(shape) > 0.1)
    pred |= ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.6
    gt[0, :4, :4] = True
    return pred, gt


def _onehot(m):
    import torch

    return torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))


@pytest.mark.parametrize("seed", range(4))
def test_dice_equals_monai_per_component(seed):
    from monai.metrics import DiceMetric

    pred, gt = _case(seed)
    ours = per_component_metrics(pred, gt)
    assert ours["n_components"] > 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = DiceMetric(include_background=False, per_component=True)(_onehot(pred), _onehot(gt))
    assert ours["cc_dice"] == pytest.approx(float(ref.reshape(-1)[0]), abs=1e-6)


def _import_ccmetrics():
    """CCMetrics calls ``torch.set_grad_enabled(False)`` at import (CC_base.py), which would switch autograd
    off for every later test in the worker: import it and put the grad mode back."""
    import torch

    enabled = torch.is_grad_enabled()
    try:
        return pytest.importorskip("CCMetrics")
    finally:
        torch.set_grad_enabled(enabled)


@pytest.mark.parametrize("seed", range(2))
def test_equals_ccmetrics(seed):
    ccm = _import_ccmetrics()
    pred, gt = _case(seed)
    tol = 1.5
    ours = per_component_metrics(pred, gt, spacing=(1.0, 1.0, 1.0), nsd_tolerance=tol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dice = ccm.CCDiceMetric(cc_reduction="patient")
        dice(y_pred=_onehot(pred).numpy(), y=_onehot(gt).numpy())
        nsd = ccm.CCSurfaceDiceMetric(cc_reduction="patient", class_thresholds=[tol])
        nsd(y_pred=_onehot(pred).numpy(), y=_onehot(gt).numpy())
        d_all = ccm.CCDiceMetric(cc_reduction="overall")
        d_all(y_pred=_onehot(pred).numpy(), y=_onehot(gt).numpy())
    assert ours["cc_dice"] == pytest.approx(float(dice.cc_aggregate()[0]), abs=1e-6)
    assert ours["dice"] == pytest.approx(d_all.cc_aggregate().reshape(-1).tolist(), abs=1e-6)
    assert ours["cc_nsd"] == pytest.approx(float(nsd.cc_aggregate()[0]), abs=1e-6)


def test_voronoi_and_edge_cases():
    cc = np.zeros((1, 1, 9), np.int32)
    cc[0, 0, 0], cc[0, 0, 8] = 1, 2
    assert voronoi_regions(cc)[0, 0].tolist() == [1, 1, 1, 1, 1, 2, 2, 2, 2] or \
        voronoi_regions(cc)[0, 0].tolist() == [1, 1, 1, 1, 2, 2, 2, 2, 2]
    empty = np.zeros((4, 5, 6), bool)
    m = per_component_metrics(empty, empty)
    assert m["n_components"] == 0 and math.isnan(m["cc_dice"]) and math.isnan(m["cc_nsd"])
    spur = empty.copy()
    spur[1, 1, 1] = True
    assert per_component_metrics(spur, empty)["cc_dice"] == 0.0
    # a large well-segmented lesion no longer hides a missed small one: the mean is over components
    gt = np.zeros((6, 20, 40), bool)
    gt[1:5, 2:18, 2:18] = True
    gt[2:4, 8:10, 30:32] = True
    pred = gt.copy()
    pred[2:4, 8:10, 30:32] = False
    m = per_component_metrics(pred, gt)
    assert m["dice"] == [1.0, 0.0] and m["cc_dice"] == 0.5


@pytest.mark.parametrize("seed", range(3))
def test_large_volume_path_equals_edt_path(seed, monkeypatch):
    """Above EDT_MAX_VOXELS the regions of prediction ∪ GT voxels come from a KD-tree: the same metrics here
    (they could differ only for voxels exactly equidistant from two components)."""
    import segbalance.evaluation.components as comp

    pred, gt = _case(seed)
    ref = per_component_metrics(pred, gt, spacing=(2.0, 0.8, 0.7), nsd_tolerance=1.0)
    monkeypatch.setattr(comp, "EDT_MAX_VOXELS", 0)
    big = per_component_metrics(pred, gt, spacing=(2.0, 0.8, 0.7), nsd_tolerance=1.0)
    assert big["dice"] == pytest.approx(ref["dice"], abs=0.02)
    assert big["cc_dice"] == pytest.approx(ref["cc_dice"], abs=0.005)
    assert big["cc_nsd"] == pytest.approx(ref["cc_nsd"], abs=0.005)
