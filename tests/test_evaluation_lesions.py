"""Lesion-level metrics: hand-computed values on analytic spheres, matching rules, connectivity, size bins,
empty cases, invariants, and agreement with panoptica (run in its own venv; skipped when absent)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from segbalance.evaluation import evaluate_case, evaluate_lesions, image_diagonal_mm
from segbalance.evaluation.lesions import bin_names

ROOT = Path(__file__).resolve().parents[1]
SPACING = (2.0, 0.8, 0.7)  # anisotropic (z, y, x) mm
SHAPE = (30, 60, 160)


def _sphere(shape, spacing, centre_mm, radius_mm):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre_mm)) <= radius_mm**2


def _five_found_three_two_fp():
    """5 GT spheres along x; the prediction finds 3 exactly, misses 2, and adds 2 spheres elsewhere."""
    gt = np.zeros(SHAPE, np.uint8)
    pred = np.zeros_like(gt)
    xs = [10.0, 30.0, 50.0, 70.0, 90.0]  # mm
    radii = [3.0, 4.0, 5.0, 6.0, 7.0]
    for x, r in zip(xs, radii):
        gt[_sphere(SHAPE, SPACING, (30.0, 20.0, x), r)] = 1
    for x, r in zip(xs[:3], radii[:3]):
        pred[_sphere(SHAPE, SPACING, (30.0, 20.0, x), r)] = 1
    for x in (100.0, 105.0):
        pred[_sphere(SHAPE, SPACING, (30.0, 36.0, x), 2.0)] = 1
    return pred, gt


def test_five_lesions_three_found_two_false_positives():
    pred, gt = _five_found_three_two_fp()
    res = evaluate_lesions(pred, gt, SPACING)
    c = res.classes[0]
    assert (c["n_gt"], c["n_pred"], c["tp"], c["fp"], c["fn"]) == (5, 5, 3, 2, 2)
    assert c["sensitivity"] == pytest.approx(0.6) and c["precision"] == pytest.approx(0.6)
    assert c["f1"] == pytest.approx(0.6) and c["rq"] == pytest.approx(0.6)
    assert c["sq"] == 1.0 and c["pq"] == pytest.approx(0.6)  # the three found are exact copies: IoU 1
    diag = image_diagonal_mm(SHAPE, SPACING)
    # BraTS-style: mean over 5 GT lesions + 2 FP components; 3 perfect, 4 penalised
    assert c["lesion_dice"] == pytest.approx(3 / 7)
    assert c["lesion_hd95"] == pytest.approx(4 * diag / 7)
    assert c["lesion_nsd"] == pytest.approx(3 / 7)
    # autoPET volumes: nothing overlaps across, so FP/FN volume = volume of the unmatched components
    vox = float(np.prod(SPACING))
    assert c["fn_components"] == 2 and c["fp_components"] == 2
    assert c["fn_volume_mm3"] == pytest.approx(vox * (np.count_nonzero(gt) - np.count_nonzero(gt & pred)))
    assert c["fp_volume_mm3"] == pytest.approx(vox * (np.count_nonzero(pred) - np.count_nonzero(gt & pred)))
    # volumes are those of the analytic spheres (discretisation within 10 %)
    gt_rows = sorted((r for r in res.lesions if r["kind"] == "gt"), key=lambda r: r["volume_mm3"])
    for r, radius in zip(gt_rows, [3.0, 4.0, 5.0, 6.0, 7.0]):
        assert r["volume_mm3"] == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.1)
    assert [r["matched"] for r in gt_rows] == [True, True, True, False, False]
    assert sum(r["kind"] == "pred" for r in res.lesions) == 2
    # size bins (100, 1000 mm³): r=3 -> 113 mm³, r=4 -> 268, r=5 -> 524, r=6 -> 905, r=7 -> 1437
    assert c["n_gt_lt100"] == 0 and c["n_gt_100to1000"] == 4 and c["n_gt_ge1000"] == 1
    assert c["sensitivity_100to1000"] == pytest.approx(3 / 4) and c["sensitivity_ge1000"] == 0.0
    assert math.isnan(c["sensitivity_lt100"])


def test_single_lesion_pair_equals_voxel_metrics():
    """One lesion per side: its pair's Dice/HD95/NSD are the voxel metrics of the class."""
    shape = (20, 50, 60)
    c = np.array([n * s / 2 for n, s in zip(shape, SPACING)])
    gt = _sphere(shape, SPACING, c, 8.0).astype(np.uint8)
    pred = _sphere(shape, SPACING, c + [0, 0, 2.1], 8.0).astype(np.uint8)
    v = evaluate_case(pred, gt, SPACING, nsd_tolerance=1.0)[0]
    les = evaluate_lesions(pred, gt, SPACING, nsd_tolerance=1.0)
    row = next(r for r in les.lesions if r["kind"] == "gt")
    assert row["matched"] and row["dice"] == pytest.approx(v.dice) and row["iou"] == pytest.approx(v.iou)
    assert row["hd95"] == pytest.approx(v.hd95) and row["nsd"] == pytest.approx(v.nsd)
    cls = les.classes[0]
    assert cls["lesion_dice"] == pytest.approx(v.dice) and cls["sq"] == pytest.approx(v.iou)
    assert cls["pq"] == pytest.approx(v.iou)  # RQ = 1
    assert abs(row["hd95"] - 2.1) <= max(SPACING)


def _two_cubes_one_bridge():
    gt = np.zeros((6, 8, 20), np.uint8)
    gt[1:5, 2:6, 2:7] = 1  # lesion A: 4*4*5 = 80 voxels
    gt[1:5, 2:6, 11:14] = 1  # lesion B: 4*4*3 = 48 voxels
    pred = np.zeros_like(gt)
    pred[1:5, 2:6, 4:13] = 1  # one prediction touching both (overlap 48 with A, 32 with B)
    return pred, gt


def test_one_prediction_touching_two_lesions():
    pred, gt = _two_cubes_one_bridge()
    iou_a, iou_b = 48 / (80 + 144 - 48), 32 / (48 + 144 - 32)
    c = evaluate_lesions(pred, gt).classes[0]  # IoU 0.27 and 0.2: no match at 0.5
    assert (c["tp"], c["fp"], c["fn"]) == (0, 1, 2) and c["pq"] == 0.0 and c["sq"] == 0.0
    assert c["fp_components"] == 0 and c["fn_components"] == 0  # autoPET: everything overlaps something
    res = evaluate_lesions(pred, gt, matching="overlap")
    c = res.classes[0]
    assert (c["tp"], c["fp"], c["fn"]) == (1, 0, 1)  # matched to A (larger IoU); B stays missed
    a = next(r for r in res.lesions if r["kind"] == "gt" and r["matched"])
    assert a["voxels"] == 80 and a["iou"] == pytest.approx(iou_a) and a["dice"] == pytest.approx(2 * 48 / 224)
    assert c["sq"] == pytest.approx(iou_a) and iou_b < iou_a
    # the reverse: one lesion touched by two predictions -> the larger IoU wins, the other is a FP
    c = evaluate_lesions(gt, pred, matching="overlap").classes[0]
    assert (c["tp"], c["fp"], c["fn"]) == (1, 1, 0)


def test_iou_threshold_is_inclusive_as_panoptica():
    gt = np.zeros((4, 4, 8), np.uint8)
    gt[1:3, 1:3, 0:4] = 1
    pred = np.zeros_like(gt)
    pred[1:3, 1:3, 0:2] = 1  # IoU exactly 0.5
    assert evaluate_lesions(pred, gt).classes[0]["tp"] == 1
    assert evaluate_lesions(pred, gt, iou_threshold=0.51).classes[0]["tp"] == 0


@pytest.mark.parametrize("connectivity, n_corner, n_edge", [(26, 1, 1), (18, 2, 1), (6, 2, 2)])
def test_connectivity(connectivity, n_corner, n_edge):
    corner = np.zeros((4, 4, 4), np.uint8)
    corner[1, 1, 1] = corner[2, 2, 2] = 1
    edge = np.zeros((4, 4, 4), np.uint8)
    edge[1, 1, 1] = edge[1, 2, 2] = 1
    assert evaluate_lesions(corner, corner, connectivity=connectivity).classes[0]["n_gt"] == n_corner
    assert evaluate_lesions(edge, edge, connectivity=connectivity).classes[0]["n_gt"] == n_edge
    flat = edge[1]  # 2D: 26 means 8-connected in the plane, 6 means 4
    assert evaluate_lesions(flat, flat, connectivity=connectivity).classes[0]["n_gt"] == n_edge
    with pytest.raises(ValueError, match="connectivity"):
        evaluate_lesions(edge, edge, connectivity=8)


def test_size_bins_configurable():
    gt = np.zeros((3, 3, 30), np.uint8)
    gt[1, 1, 0:1] = 1  # 1 voxel
    gt[1, 1, 3:6] = 1  # 3
    gt[1, 1, 10:20] = 1  # 10
    pred = gt.copy()
    pred[1, 1, 10:20] = 0
    c = evaluate_lesions(pred, gt, spacing=(1.0, 1.0, 2.0), size_bins_mm3=(2, 10)).classes[0]  # 2 mm³ voxels
    assert bin_names((2, 10)) == ["lt2", "2to10", "ge10"]
    assert (c["n_gt_lt2"], c["n_gt_2to10"], c["n_gt_ge10"]) == (0, 2, 1)
    assert (c["sensitivity_2to10"], c["sensitivity_ge10"]) == (1.0, 0.0)
    with pytest.raises(ValueError, match="size_bins"):
        evaluate_lesions(pred, gt, size_bins_mm3=(10, 2))


def test_empty_policy():
    gt = np.zeros((6, 6, 6), np.uint8)
    gt[1:3, 1:3, 1:3] = 1
    empty = np.zeros_like(gt)
    diag = image_diagonal_mm(gt.shape, (1, 1, 1))
    c = evaluate_lesions(empty, gt, labels=[1]).classes[0]
    assert c["flag"] == "missed" and c["sensitivity"] == 0.0 and math.isnan(c["precision"])
    assert c["f1"] == 0.0 and c["pq"] == 0.0 and c["lesion_dice"] == 0.0 and c["lesion_hd95"] == diag
    assert c["fn_volume_mm3"] == 8.0 and c["fn_components"] == 1
    c = evaluate_lesions(gt, empty, labels=[1]).classes[0]
    assert c["flag"] == "false_positive" and math.isnan(c["sensitivity"]) and c["precision"] == 0.0
    assert c["fp_volume_mm3"] == 8.0 and c["lesion_hd95"] == diag
    c = evaluate_lesions(empty, empty, labels=[1]).classes[0]
    assert c["flag"] == "both_empty" and c["n_gt"] == 0
    assert all(math.isnan(c[k]) for k in ("sensitivity", "precision", "f1", "pq", "sq", "lesion_dice"))


def test_swap_invariant_and_multiclass():
    rng = np.random.default_rng(0)
    gt = np.zeros((24, 48, 48), np.uint8)
    pred = np.zeros_like(gt)
    for k in (1, 2):
        gt[ndimage.gaussian_filter(rng.random(gt.shape), 1.5) > 0.56 + 0.01 * k] = k
        pred[ndimage.gaussian_filter(rng.random(gt.shape), 1.5) > 0.56 + 0.01 * k] = k
    pred[gt == 2] = 2  # class 2 partly right
    a = evaluate_lesions(pred, gt, SPACING, matching="overlap").classes
    b = evaluate_lesions(gt, pred, SPACING, matching="overlap").classes
    for x, y in zip(a, b):
        assert x["tp"] == y["tp"] and x["n_gt"] == y["n_pred"] and x["fp"] == y["fn"]
        assert x["sensitivity"] == pytest.approx(y["precision"])
        assert x["fp_volume_mm3"] == pytest.approx(y["fn_volume_mm3"])
        assert x["pq"] == pytest.approx(y["pq"]) and x["sq"] == pytest.approx(y["sq"])
        assert x["n_gt"] > 3
    # a perfect prediction: every lesion found, PQ 1
    c = evaluate_lesions(gt, gt, SPACING).classes
    assert all(r["pq"] == 1.0 and r["lesion_dice"] == 1.0 and r["lesion_hd95"] == 0.0 for r in c)


def test_phantom_lesion_count():
    from segbalance.synthetic import make_phantom

    p = make_phantom((32, 96, 96), (2.0, 0.8, 0.8), seed=3, n_lesions=6, lesion_radii_mm=(1.0, 6.0))
    c = evaluate_lesions(p.label, p.label, p.spacing, labels=[2]).classes[0]
    assert c["n_gt"] == p.meta["n_lesions"] >= 4
    vols = [r["voxels"] for r in evaluate_lesions(p.label, p.label, p.spacing, labels=[2]).lesions]
    assert min(vols) < 30 < max(vols)  # a spread of sizes, down to a few voxels across
    assert make_phantom((16, 32, 32), seed=0).meta["n_lesions"] == 1  # the default: one lesion
    with pytest.raises(ValueError, match="n_lesions"):
        make_phantom((16, 32, 32), n_lesions=0)


# -- panoptica ---------------------------------------------------------------------------------------------

def _panoptica_python() -> str | None:
    for cand in (os.environ.get("SEGBALANCE_PANOPTICA_PYTHON"),
                 ROOT / "benchmarks/.venv-panoptica/bin/python", "/tmp/panoptica-venv/bin/python"):
        if cand and Path(cand).is_file():
            return str(cand)
    return None


def run_panoptica(pred, gt, spacing, labels, tmp_path, threshold=0.5) -> dict:
    src, dst = tmp_path / "in.npz", tmp_path / "out.json"
    np.savez(src, pred=pred, gt=gt, spacing=np.array(spacing), labels=np.array(labels), repeats=1,
             metrics=np.array(["IOU"]), iou_threshold=threshold)
    runner = ROOT / "benchmarks" / "_panoptica_runner.py"
    subprocess.run([_panoptica_python(), str(runner), str(src), str(dst)], check=True, capture_output=True,
                   timeout=600)
    return json.loads(dst.read_text())


@pytest.mark.skipif(_panoptica_python() is None,
                    reason="panoptica venv absent: python -m venv benchmarks/.venv-panoptica && "
                           "benchmarks/.venv-panoptica/bin/pip install panoptica (it pins numpy<2.3, cc3d<4)")
@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_panoptica(tmp_path, seed):
    rng = np.random.default_rng(seed)
    shape = (32, 64, 64)
    gt = np.zeros(shape, np.uint8)
    pred = np.zeros_like(gt)
    for k in (1, 2):
        g = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.55 + 0.01 * k
        gt[g] = k
        # prediction: the GT blobs dilated (class 1) or shifted by a voxel (class 2), plus noise blobs
        p = ndimage.binary_dilation(g) if k == 1 else np.roll(g, 1, axis=2)
        p |= ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.58
        pred[p] = k
    ours = {c["label"]: c for c in evaluate_lesions(pred, gt, SPACING, labels=[1, 2]).classes}
    ref = run_panoptica(pred, gt, SPACING, [1, 2], tmp_path)["labels"]
    for label in (1, 2):
        o, r = ours[label], ref[str(label)]
        assert o["n_gt"] > 3 and o["tp"] > 0
        assert (o["tp"], o["fp"], o["fn"]) == (r["tp"], r["fp"], r["fn"])
        for ours_key, ref_key in (("pq", "pq"), ("sq", "sq"), ("rq", "rq"), ("f1", "rq"),
                                  ("precision", "prec"), ("sensitivity", "rec")):
            assert o[ours_key] == pytest.approx(r[ref_key], abs=1e-9), ours_key
        for i, name in enumerate(("lt100", "100to1000", "ge1000")):
            a, b = o[f"sensitivity_{name}"], r["recall_by_volume"][f"rec_q{i}"]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


@pytest.mark.parametrize("seed", range(4))
def test_pair_distances_equal_monai(seed):
    """The lean per-lesion edge distances are MONAI's (segbalance.evaluation.metrics.surface_distances)."""
    from segbalance.evaluation.lesions import pair_surface_distances
    from segbalance.evaluation.metrics import surface_distances

    rng = np.random.default_rng(seed)
    shape = (9, 14, 16)
    g = ndimage.gaussian_filter(rng.random(shape), 1.2) > 0.5
    p = ndimage.gaussian_filter(rng.random(shape), 1.2) > 0.5
    g[0, :3, :3] = p[-1, -3:, -3:] = True  # touching the crop border
    spacing = (2.5, 0.7, 0.9)
    ours = pair_surface_distances(g, p, spacing)
    ref = surface_distances(p, g, spacing)[:2]
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(np.sort(a), np.sort(b.astype(np.float32)))
    # the KD-tree path (large crops) gives the same distances as the EDT path (small crops) and MONAI
    from segbalance.evaluation.metrics import edge_distances

    for a, b in zip(edge_distances(p, g, spacing, method="kdtree"), ref):
        np.testing.assert_array_equal(np.sort(a), np.sort(b.astype(np.float32)))


def test_unmatched_lesion_reports_its_best_iou():
    gt = np.zeros((1, 6, 30), np.uint8)
    gt[0, 1:5, 2:10] = 1
    pred = np.zeros_like(gt)
    pred[0, 1:5, 2:5] = 1  # IoU 3/8 < 0.5: no match, but it overlaps
    rows = evaluate_lesions(pred, gt).lesions
    g = next(r for r in rows if r["kind"] == "gt")
    p = next(r for r in rows if r["kind"] == "pred")
    assert not g["matched"] and g["iou"] == pytest.approx(3 / 8) and g["dice"] == 0.0
    assert p["iou"] == pytest.approx(3 / 8)
