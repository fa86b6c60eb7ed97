"""Per-component metrics (CC-Metrics: Jaus et al., "Every Component Counts: Rethinking the Measure of Success
for Medical Semantic Segmentation in Multi-Instance Segmentation Tasks", AAAI 2025, arXiv:2410.18684).

Each ground-truth component (a connected component of the class, ``connectivity`` 26 by default) owns its
**Voronoi region**: the voxels nearer to it than to any other component, by the Euclidean distance in voxel
index units (as the CCMetrics package's ``compute_voronoi_regions_fast`` and MONAI's, ``sampling=None``;
the nearest component from one ``scipy.ndimage.distance_transform_edt`` with ``return_indices``). Inside its
region each component gets

* **Dice** ``2 TP / (2 TP + FP + FN)`` over the region's voxels (MONAI ``DiceMetric(per_component=True)``,
  CCMetrics ``CCDiceMetric``), and
* **NSD** (surface Dice at the class tolerance, mm): MONAI's edges and distances
  (:func:`segbalance.evaluation.metrics.edge_distances`) of the prediction and the ground truth each masked
  by the region (CCMetrics ``CCSurfaceDiceMetric``, which calls MONAI's ``SurfaceDiceMetric`` per region);
  0 when the prediction has no voxel in the region.

The case value is the mean over the components (CCMetrics' ``cc_reduction="patient"``). Only the region
labels of voxels in prediction ∪ ground truth enter the counts and the edges, so the regions are computed on
the bounding box of prediction ∪ ground truth (outside it neither mask has a voxel). Up to
:data:`EDT_MAX_VOXELS` voxels in that box they come from the EDT as in the references; above (lesions spread
over a whole 512² CT, where the EDT's index arrays would take gigabytes), each voxel of prediction ∪ ground
truth gets the component of its nearest GT voxel from a KD-tree: the same regions except for voxels exactly
equidistant from two components, which the EDT and the KD-tree may give to different ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segbalance.evaluation.connected import component_stats, connected_components
from segbalance.evaluation.metrics import _bbox_crop, edge_distances

#: bounding boxes up to this many voxels get their Voronoi regions from scipy's EDT (as MONAI and CCMetrics)
EDT_MAX_VOXELS = 8_000_000


def _nearest_component_labels(gcc: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Voronoi labels of the voxels ``where`` only (a boolean mask): GT voxels keep their component, the
    others take the component of the nearest GT edge voxel (Euclidean, voxel units; a KD-tree)."""
    from scipy.spatial import cKDTree

    from segbalance.evaluation.metrics import mask_edges

    out = np.zeros(gcc.shape, np.int32)
    fg = gcc > 0
    out[fg] = gcc[fg]
    todo = where & ~fg
    if todo.any():
        edge = mask_edges(fg)
        pts = np.argwhere(edge)
        nearest = cKDTree(pts.astype(np.float64)).query(np.argwhere(todo).astype(np.float64), k=1,
                                                         workers=-1)[1]
        out[todo] = gcc[tuple(pts[nearest].T)]
    return out


def voronoi_regions(gt_cc: np.ndarray) -> np.ndarray:
    """For each voxel the id of the nearest component of ``gt_cc`` (ids 1..n; Euclidean, voxel units)."""
    from scipy.ndimage import distance_transform_edt

    if not gt_cc.any():
        return np.zeros(gt_cc.shape, np.int32)
    idx = distance_transform_edt(gt_cc == 0, return_distances=False, return_indices=True)
    return gt_cc[tuple(idx)].astype(np.int32, copy=False)


def per_component_metrics(pred_mask: np.ndarray, gt_mask: np.ndarray, spacing: Sequence[float] | None = None,
                          nsd_tolerance: float = 1.0, connectivity: int = 26) -> dict:
    """Dice and NSD of each GT component in its Voronoi region, and their means over the components.

    Returns ``{"n_components", "cc_dice", "cc_nsd", "dice", "nsd"}`` (the last two per component, in
    component-id order). Without GT components: ``cc_dice``/``cc_nsd`` NaN when the prediction is empty too,
    else 0 (a spurious prediction), ``n_components`` 0.

    Example (two lesions, one found exactly, one missed):
        >>> import numpy as np
        >>> gt = np.zeros((1, 6, 20), bool); gt[0, 1:4, 1:4] = gt[0, 1:4, 12:15] = True
        >>> pred = np.zeros_like(gt); pred[0, 1:4, 1:4] = True
        >>> m = per_component_metrics(pred, gt)
        >>> m["n_components"], m["dice"], m["cc_dice"], m["cc_nsd"]
        (2, [1.0, 0.0], 0.5, 0.5)
    """
    pred_mask, gt_mask = np.asarray(pred_mask, bool), np.asarray(gt_mask, bool)
    spacing = tuple(float(s) for s in (spacing or (1.0,) * gt_mask.ndim))
    union = pred_mask | gt_mask
    if not gt_mask.any():
        v = float("nan") if not pred_mask.any() else 0.0
        return {"n_components": 0, "cc_dice": v, "cc_nsd": v, "dice": [], "nsd": []}
    box = _bbox_crop(union, margin=0)
    pm, gm = pred_mask[box], gt_mask[box]
    gcc, n = connected_components(gm, connectivity)
    region = voronoi_regions(gcc) if gcc.size <= EDT_MAX_VOXELS else _nearest_component_labels(gcc, pm | gm)
    union_c = pm | gm
    idx = np.flatnonzero(union_c)  # only these voxels count: TN voxels enter neither Dice nor the edges
    code = region.ravel()[idx].astype(np.int64) * 4 + gm.ravel()[idx] * 2 + pm.ravel()[idx]
    hist = np.bincount(code, minlength=(n + 1) * 4).reshape(-1, 4)[1:]
    fp, fn, tp = hist[:, 1], hist[:, 2], hist[:, 3]
    dice = (2 * tp / (2 * tp + fp + fn)).tolist()
    boxes = component_stats(region, union_c, n)["bounding_boxes"]  # of each region's voxels in pred ∪ GT
    nsd = []
    for r in range(1, n + 1):
        if not tp[r - 1] and not fp[r - 1]:
            nsd.append(0.0)  # nothing predicted in the region
            continue
        sub = boxes[r]
        inside = region[sub] == r
        d_pg, d_gp = edge_distances(pm[sub] & inside, gm[sub] & inside, spacing)
        nsd.append(float((np.count_nonzero(d_pg <= nsd_tolerance) + np.count_nonzero(d_gp <= nsd_tolerance))
                         / (d_pg.size + d_gp.size)))
    return {"n_components": n, "cc_dice": float(np.mean(dice)), "cc_nsd": float(np.mean(nsd)),
            "dice": [float(v) for v in dice], "nsd": nsd}
