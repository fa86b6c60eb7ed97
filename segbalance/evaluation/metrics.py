"""Per-case, per-class segmentation metrics: Dice, IoU, precision, recall, HD95, ASD and surface Dice (NSD).

The overlap metrics come from one confusion count over the label maps. The three surface metrics share one
set of edge-to-edge distances per class, :func:`edge_distances`: MONAI's edges (``mask XOR
binary_erosion(mask)``, cross-shaped element, zero outside) on the arrays cropped to the bounding box of
prediction ∪ ground truth plus a one-voxel margin (MONAI crops the same way internally), and each edge voxel's
distance in mm to the nearest edge voxel of the other mask (a KD-tree). These are the numbers of MONAI's
:func:`monai.metrics.utils.get_edge_surface_distance` (checked in tests/test_evaluation_metrics.py) without
importing MONAI or torch, which took most of a cold ``segbalance evaluate``; MONAI is imported only for
``use_subvoxels`` (sub-voxel surface areas). From those two directed distance sets:

* HD95 = max(q95(d(P→G)), q95(d(G→P))), as ``HausdorffDistanceMetric(percentile=95)``;
* ASD = mean(d(P→G) ∪ d(G→P)), as ``SurfaceDistanceMetric(symmetric=True)``;
* NSD_τ = (|{d(P→G) ≤ τ}| + |{d(G→P) ≤ τ}|) / (|∂P| + |∂G|), as ``SurfaceDiceMetric``
  (Nikolov et al. 2021, "Clinically applicable segmentation of head and neck anatomy", Eq. 1).

Empty structures (where MONAI returns NaN or inf) follow the policy in docs/evaluation.md, see
:data:`FLAGS`; every row carries a ``flag`` so nothing is dropped silently.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

METRICS = ("dice", "iou", "precision", "recall", "hd95", "asd", "nsd")

#: flag -> meaning. ``ok``: both present. ``missed``: ground truth present, prediction empty (Dice/IoU/
#: precision/recall/NSD 0, HD95/ASD = image diagonal in mm). ``false_positive``: ground truth empty,
#: prediction present (Dice/IoU/precision/NSD 0, recall NaN, HD95/ASD = diagonal). ``both_empty``: all
#: metrics NaN, excluded from means and counted. ``missing_prediction``: no prediction file; scored as
#: ``missed`` (or ``both_empty``/NaN when the class is absent from the ground truth).
FLAGS = ("ok", "missed", "false_positive", "both_empty", "missing_prediction")


@dataclass
class ClassMetrics:
    """Metrics of one class in one case; distances in mm."""

    label: int
    dice: float
    iou: float
    precision: float
    recall: float
    hd95: float
    asd: float
    nsd: float
    flag: str
    gt_voxels: int
    pred_voxels: int
    tp: int
    nsd_tolerance: float

    def as_dict(self) -> dict:
        return asdict(self)


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length in mm of the image's diagonal: the HD95/ASD given to a missed or spurious structure."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def _check_inputs(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None) -> tuple[float, ...]:
    if not isinstance(pred, np.ndarray) or not isinstance(gt, np.ndarray):
        raise ValueError("pred and gt must be numpy label arrays")
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} differs from gt shape {gt.shape}")
    if spacing is None:
        spacing = (1.0,) * gt.ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != gt.ndim:
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for a {gt.ndim}-D array")
    if not all(s > 0 and math.isfinite(s) for s in spacing):
        raise ValueError(f"spacing must be positive and finite, got {spacing}")
    return spacing


def _tolerance_for(label: int, nsd_tolerance: float | Mapping[int, float]) -> float:
    if isinstance(nsd_tolerance, Mapping):
        if label not in nsd_tolerance:
            raise ValueError(f"nsd_tolerance has no value for label {label} "
                             f"(given for {sorted(nsd_tolerance)})")
        tol = float(nsd_tolerance[label])
    else:
        tol = float(nsd_tolerance)
    if not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"nsd_tolerance for label {label} must be finite and >= 0, got {tol}")
    return tol


def _bbox_crop(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """Bounding box of ``mask`` widened by ``margin`` voxels, clipped to the array."""
    sl = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        sl.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(sl)


def surface_distances(pred_mask: np.ndarray, gt_mask: np.ndarray, spacing: Sequence[float],
                      use_subvoxels: bool = False) -> tuple:
    """MONAI's edge surface distances of two non-empty boolean masks, computed on their shared crop.

    Returns ``(d_pred_to_gt, d_gt_to_pred, areas_pred, areas_gt)`` as float64 numpy arrays (areas are
    None unless ``use_subvoxels``).
    """
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    box = _bbox_crop(pred_mask | gt_mask, margin=1)
    yp = torch.from_numpy(np.ascontiguousarray(pred_mask[box]))
    yt = torch.from_numpy(np.ascontiguousarray(gt_mask[box]))
    with warnings.catch_warnings():  # MONAI 1.6 warns about its own internal use of a deprecated argument
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        (edges_p, edges_g), (d_pg, d_gp), areas = get_edge_surface_distance(
            yp, yt, spacing=[float(s) for s in spacing], use_subvoxels=use_subvoxels, symmetric=True,
            warn_empty=False)
    a_p = a_g = None
    if use_subvoxels:
        a_p, a_g = (areas if len(areas) == 2 else (areas[0], areas[0]))
        a_p, a_g = a_p[edges_p].numpy(), a_g[edges_g].numpy()
    return d_pg.numpy(), d_gp.numpy(), a_p, a_g


def mask_edges(mask: np.ndarray) -> np.ndarray:
    """MONAI's edges of a boolean mask: ``mask & ~binary_erosion(mask)`` with the cross-shaped (face)
    neighbourhood and background outside the array, by array shifts (no scipy call)."""
    inner = mask.copy()
    for axis in range(mask.ndim):
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        inner[tuple(lo)] &= mask[tuple(hi)]
        inner[tuple(hi)] &= mask[tuple(lo)]
        for edge in (0, -1):  # the neighbour outside the array is background
            border = [slice(None)] * mask.ndim
            border[axis] = edge
            inner[tuple(border)] = False
    return mask & ~inner


#: crops up to this many voxels use scipy's EDT (MONAI's own method on CPU; no scipy.spatial import, which
#: dominated a cold start on small cases); larger ones a KD-tree on the edge voxels (faster there)
EDT_MAX_VOXELS = 2_000_000


def edge_distances(pred_mask: np.ndarray, gt_mask: np.ndarray, spacing: Sequence[float],
                   method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Directed edge-to-edge distances in mm (float32) of two non-empty boolean masks:
    ``(d(P->G), d(G->P))``, the numbers of MONAI's ``get_edge_surface_distance`` (see the module docstring).

    ``method``: ``"edt"`` (``scipy.ndimage.distance_transform_edt`` of the other mask's non-edges, with the
    spacing: what MONAI computes on CPU), ``"kdtree"`` (nearest edge voxel by ``scipy.spatial.cKDTree``;
    the same distances, checked in the tests) or ``"auto"`` (EDT up to :data:`EDT_MAX_VOXELS` voxels in
    the crop, else the KD-tree).
    """
    box = _bbox_crop(pred_mask | gt_mask, margin=1)
    scale = np.asarray(spacing, dtype=np.float64)
    e_p, e_g = (mask_edges(np.ascontiguousarray(m[box])) for m in (pred_mask, gt_mask))
    if method == "auto":
        method = "edt" if e_p.size <= EDT_MAX_VOXELS else "kdtree"
    if method == "edt":
        from scipy.ndimage import distance_transform_edt

        d_pg = distance_transform_edt(~e_g, sampling=scale)[e_p].astype(np.float32)
        d_gp = distance_transform_edt(~e_p, sampling=scale)[e_g].astype(np.float32)
        return d_pg, d_gp
    if method != "kdtree":
        raise ValueError(f"method must be 'auto', 'edt' or 'kdtree', got {method!r}")
    from scipy.spatial import cKDTree

    p_pts, g_pts = (np.argwhere(e).astype(np.float64) * scale for e in (e_p, e_g))
    d_pg = cKDTree(g_pts, leafsize=32).query(p_pts, k=1, workers=-1)[0].astype(np.float32)
    d_gp = cKDTree(p_pts, leafsize=32).query(g_pts, k=1, workers=-1)[0].astype(np.float32)
    return d_pg, d_gp


def _quantile(d: np.ndarray, q: float) -> float:
    # torch.quantile's default 'linear' interpolation, as MONAI uses
    return float(np.quantile(d.astype(np.float32), q)) if d.size else float("nan")


def evaluate_case(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
    labels: Sequence[int] | None = None,
    nsd_tolerance: float | Mapping[int, float] = 1.0,
    use_subvoxels: bool = False,
    percentile: float = 95.0,
) -> list[ClassMetrics]:
    """All metrics of one case for each class in ``labels``.

    Args:
        pred: predicted label map (integer array, same shape as ``gt``).
        gt: ground-truth label map.
        spacing: voxel spacing in mm in the arrays' axis order (use the ground truth's); default 1.
        labels: classes to score; default every label >= 1 present in ``gt`` or ``pred``.
        nsd_tolerance: surface Dice tolerance in mm, one value or ``{label: mm}``.
        use_subvoxels: surface Dice with sub-voxel surface elements (MONAI ``use_subvoxels``).
        percentile: Hausdorff percentile (95 gives HD95).

    Returns:
        one :class:`ClassMetrics` per label, empty structures handled as in :data:`FLAGS`.

    Example:
        >>> import numpy as np
        >>> gt = np.zeros((8, 8, 8), np.uint8); gt[2:6, 2:6, 2:6] = 1
        >>> pred = np.zeros_like(gt); pred[2:6, 2:6, 3:7] = 1
        >>> m = evaluate_case(pred, gt)[0]
        >>> round(m.dice, 4), m.flag, m.hd95
        (0.75, 'ok', 1.0)
    """
    spacing = _check_inputs(pred, gt, spacing)
    if labels is None:
        present = np.union1d(np.unique(gt), np.unique(pred))
        labels = [int(v) for v in present if v >= 1]
    labels = [int(v) for v in labels]
    diag = image_diagonal_mm(gt.shape, spacing)
    out = []
    for label in labels:
        tol = _tolerance_for(label, nsd_tolerance)
        gm = gt == label
        pm = pred == label
        n_g, n_p = int(gm.sum()), int(pm.sum())
        tp = int(np.count_nonzero(gm & pm)) if n_g and n_p else 0
        nan = float("nan")
        if n_g == 0 and n_p == 0:
            out.append(ClassMetrics(label, nan, nan, nan, nan, nan, nan, nan, "both_empty", 0, 0, 0, tol))
            continue
        if n_p == 0:
            out.append(ClassMetrics(label, 0.0, 0.0, 0.0, 0.0, diag, diag, 0.0, "missed", n_g, 0, 0, tol))
            continue
        if n_g == 0:
            out.append(ClassMetrics(label, 0.0, 0.0, 0.0, nan, diag, diag, 0.0, "false_positive",
                                    0, n_p, 0, tol))
            continue
        dice = 2.0 * tp / (n_g + n_p)
        iou = tp / (n_g + n_p - tp)
        d_pg, d_gp = edge_distances(pm, gm, spacing)
        hd = max(_quantile(d_pg, percentile / 100), _quantile(d_gp, percentile / 100))
        both = np.concatenate([d_pg, d_gp])
        asd = float(both.astype(np.float32).mean())
        if use_subvoxels:
            s_pg, s_gp, a_p, a_g = surface_distances(pm, gm, spacing, use_subvoxels=True)
            total = a_p.sum() + a_g.sum()
            nsd = float((a_p[s_pg <= tol].sum() + a_g[s_gp <= tol].sum()) / total) if total > 0 else nan
        else:
            nsd = float((np.count_nonzero(d_pg <= tol) + np.count_nonzero(d_gp <= tol)) / both.size)
        out.append(ClassMetrics(label, dice, iou, tp / n_p, tp / n_g, hd, asd, nsd, "ok", n_g, n_p, tp, tol))
    return out


def missing_prediction(gt: np.ndarray, spacing: Sequence[float] | None = None,
                       labels: Sequence[int] | None = None,
                       nsd_tolerance: float | Mapping[int, float] = 1.0) -> list[ClassMetrics]:
    """Rows for a case whose prediction file is missing: scored as an empty prediction, flagged."""
    rows = evaluate_case(np.zeros_like(gt), gt, spacing, labels, nsd_tolerance)
    for r in rows:
        r.flag = "missing_prediction"
    return rows
