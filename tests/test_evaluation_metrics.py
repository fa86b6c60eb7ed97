"""segbalance.evaluation.metrics: analytic spheres, agreement with MONAI's metrics, empty-case policy."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from segbalance.evaluation import evaluate_case, image_diagonal_mm, summarize

SPACING = (2.0, 0.8, 0.7)  # anisotropic (z, y, x) mm


def _sphere(shape, spacing, centre_mm, radius_mm):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    d2 = sum((g - c) ** 2 for g, c in zip(grids, centre_mm))
    return d2 <= radius_mm**2


def _blobs(rng, shape, n_labels):
    lab = np.zeros(shape, np.uint8)
    for k in range(1, n_labels + 1):
        lab[ndimage.gaussian_filter(rng.random(shape), 2) > 0.5 + 0.02 * k] = k
    return lab


def test_concentric_spheres_distances_equal_radius_gap():
    shape = (18, 44, 50)
    c = tuple(n * s / 2 for n, s in zip(shape, SPACING))
    r1, r2 = 6.0, 10.0
    gt = _sphere(shape, SPACING, c, r2).astype(np.uint8)
    pred = _sphere(shape, SPACING, c, r1).astype(np.uint8)
    m = evaluate_case(pred, gt, SPACING, nsd_tolerance={1: 0.5})[0]
    tol = max(SPACING)  # discretisation error: within one voxel
    assert m.flag == "ok"
    assert abs(m.hd95 - (r2 - r1)) <= tol
    assert abs(m.asd - (r2 - r1)) <= tol
    assert m.nsd < 0.1  # every surface point is ~4 mm from the other surface, tolerance 0.5 mm
    m_wide = evaluate_case(pred, gt, SPACING, nsd_tolerance=(r2 - r1) + tol)[0]
    assert m_wide.nsd == pytest.approx(1.0)
    # recall = |inner| / |outer| ≈ (r1 / r2)^3 (precision 1: inner ⊂ outer)
    assert m.precision == 1.0
    assert m.recall == pytest.approx((r1 / r2) ** 3, rel=0.1)


def test_offset_spheres_hausdorff_equals_offset():
    shape = (20, 50, 60)
    r, d = 8.0, 5.6  # offset along x (8 voxels of 0.7 mm)
    c = np.array([n * s / 2 for n, s in zip(shape, SPACING)])
    gt = _sphere(shape, SPACING, c, r).astype(np.uint8)
    pred = _sphere(shape, SPACING, c + [0, 0, d], r).astype(np.uint8)
    m = evaluate_case(pred, gt, SPACING, percentile=100)[0]
    assert abs(m.hd95 - d) <= max(SPACING)
    m95 = evaluate_case(pred, gt, SPACING)[0]
    assert m95.hd95 <= m.hd95 + 1e-9


def _onehot(a, k):
    return torch.from_numpy(np.stack([a == i for i in range(k + 1)])[None].astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_monai_metrics(seed):
    from monai.metrics import (
        ConfusionMatrixMetric,
        DiceMetric,
        HausdorffDistanceMetric,
        MeanIoU,
        SurfaceDiceMetric,
        SurfaceDistanceMetric,
    )
    from monai.metrics.confusion_matrix import compute_confusion_matrix_metric

    rng = np.random.default_rng(seed)
    shape = (16, 28, 24)
    gt, pred = _blobs(rng, shape, 2), _blobs(rng, shape, 2)
    gt[0, :8, :8] = 1  # structures touching the image border: cropping must not change the edges
    pred[-1, -6:, -6:] = 2
    tol = [1.0, 2.5]
    yp, yt = _onehot(pred, 2), _onehot(gt, 2)
    sp = [float(s) for s in SPACING]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = {
            "dice": DiceMetric(include_background=False)(yp, yt),
            "iou": MeanIoU(include_background=False)(yp, yt),
            "hd95": HausdorffDistanceMetric(percentile=95)(yp, yt, spacing=sp),
            "asd": SurfaceDistanceMetric(symmetric=True)(yp, yt, spacing=sp),
            "nsd": SurfaceDiceMetric(tol)(yp, yt, spacing=sp),
        }
        cm = ConfusionMatrixMetric(include_background=False, metric_name=["precision", "recall"])
        cm(yp, yt)
        buf = cm.get_buffer()  # (B, C, 4): tp, fp, tn, fn per class
        ref["precision"] = compute_confusion_matrix_metric("precision", buf)
        ref["recall"] = compute_confusion_matrix_metric("recall", buf)
        nsd_sub = SurfaceDiceMetric(tol, use_subvoxels=True)(yp, yt, spacing=sp)
    ours = evaluate_case(pred, gt, SPACING, labels=[1, 2], nsd_tolerance={1: 1.0, 2: 2.5})
    ours_sub = evaluate_case(pred, gt, SPACING, labels=[1, 2], nsd_tolerance={1: 1.0, 2: 2.5},
                             use_subvoxels=True)
    for j, m in enumerate(ours):
        assert m.flag == "ok"
        for name, val in ref.items():
            assert getattr(m, name) == pytest.approx(float(val.reshape(-1)[j]), abs=1e-6, rel=1e-6), name
        assert ours_sub[j].nsd == pytest.approx(float(nsd_sub[0, j]), abs=1e-6)
    assert any(abs(a.nsd - b.nsd) > 1e-3 for a, b in zip(ours, ours_sub))  # sub-voxel surfaces differ


def test_empty_case_policy_and_missed_lesion_in_mean():
    shape, sp = (10, 20, 20), (3.0, 1.0, 1.0)
    gt = np.zeros(shape, np.uint8)
    gt[2:8, 4:16, 4:16] = 1
    gt[4:6, 8:10, 8:10] = 2  # lesion
    pred = np.where(gt == 2, 1, gt).astype(np.uint8)  # lesion missed (labelled as organ)
    rows = {m.label: m for m in evaluate_case(pred, gt, sp, labels=[1, 2, 3])}
    diag = image_diagonal_mm(shape, sp)
    assert diag == pytest.approx(math.sqrt(30**2 + 20**2 + 20**2))
    les = rows[2]
    assert (les.flag, les.dice, les.recall, les.nsd) == ("missed", 0.0, 0.0, 0.0)
    assert les.hd95 == les.asd == diag
    assert rows[3].flag == "both_empty" and math.isnan(rows[3].dice) and math.isnan(rows[3].hd95)
    fp = evaluate_case(gt, np.zeros_like(gt), sp, labels=[2])[0]
    assert (fp.flag, fp.dice, fp.precision, fp.hd95, fp.nsd) == ("false_positive", 0.0, 0.0, diag, 0.0)
    assert math.isnan(fp.recall)
    # the miss enters the lesion mean; the both-empty class is excluded and counted
    hit = evaluate_case(gt, gt, sp, labels=[1, 2, 3])
    summary = summarize({"m": [{"case": "a", **r.as_dict()} for r in rows.values()]
                         + [{"case": "b", **r.as_dict()} for r in hit]})
    by_label = {e["label"]: e for e in summary}
    assert by_label[2]["dice"] == {"mean": 0.5, "std": 0.5, "n": 2}
    assert by_label[2]["flags"] == {"missed": 1, "ok": 1}
    assert by_label[3]["dice"]["n"] == 0 and by_label[3]["flags"] == {"both_empty": 2}


def test_bad_inputs():
    a = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        evaluate_case(a, np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="spacing"):
        evaluate_case(a, a, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="nsd_tolerance"):
        evaluate_case(a, a, labels=[1], nsd_tolerance={2: 1.0})


REAL = Path(__file__).resolve().parent / "data" / "real"  # cropped real cases (tests/data/real/README.md)


def test_real_lesion_mask_agrees_with_monai():
    from monai.metrics import HausdorffDistanceMetric, SurfaceDiceMetric, SurfaceDistanceMetric

    from segbalance.io.volumes import read_volume

    vol = read_volume(REAL / "brain1_label.nrrd")
    gt = (np.asarray(vol.array) > 0).astype(np.uint8)
    pred = ndimage.binary_dilation(gt, iterations=1).astype(np.uint8)  # a slightly too large prediction
    pred = np.roll(pred, 2, axis=-1)
    sp = [float(s) for s in vol.spacing]
    yp, yt = _onehot(pred, 1), _onehot(gt, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = HausdorffDistanceMetric(percentile=95)(yp, yt, spacing=sp).item()
        asd = SurfaceDistanceMetric(symmetric=True)(yp, yt, spacing=sp).item()
        nsd = SurfaceDiceMetric([1.0])(yp, yt, spacing=sp).item()
    m = evaluate_case(pred, gt, vol.spacing, labels=[1])[0]
    assert (m.hd95, m.asd, m.nsd) == pytest.approx((hd, asd, nsd), abs=1e-6)
    assert m.recall == pytest.approx(1.0 - np.count_nonzero(gt & ~pred.astype(bool)) / gt.sum(), abs=1e-12)
