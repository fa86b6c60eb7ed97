"""Lesion-level (instance) evaluation: connected components, one-to-one matching, detection and lesion-wise
metrics per case and class.

Definitions (sources in docs/evaluation.md, "Lesion-level metrics"):

* **Lesions** are the connected components of each class, separately in the ground truth and in the
  prediction (``cc3d``, 26-connectivity by default; 6 or 18 selectable, 4 or 8 in 2D). Volumes are in mm³
  from the ground truth's spacing.
* **Matching** is one-to-one and greedy on descending IoU, as panoptica's ``NaiveThresholdMatching``
  (Kofler et al. 2023): every overlapping (GT, predicted) pair is ranked by IoU; a pair is matched when
  neither member is matched yet and its IoU passes the rule. ``matching="iou"``: IoU >= ``iou_threshold``
  (0.5, panoptica's default, which compares with ``>=``); at 0.5 or above a component can pass with one
  partner at most, so no tie-breaking happens. ``matching="overlap"``: any overlap (IoU > 0); a prediction
  touching two lesions is matched to the one with the larger IoU, and the other lesion stays missed
  unless another prediction overlaps it; symmetrically a lesion touched by two predictions is matched to the
  one with the larger IoU and the other prediction is a false positive. Ties are broken by the larger
  intersection, then the smaller GT id, then the smaller predicted id.
* **Detection** per case and class: TP = matched pairs, FN = unmatched GT lesions, FP = unmatched
  predicted components; sensitivity = TP / #GT, precision = TP / #pred, F1 = RQ = TP / (TP + FP/2 + FN/2);
  SQ = mean IoU of the matched pairs; PQ = SQ × RQ (Kirillov et al. 2019, panoptica's ``rq``/``sq``/``pq``).
* **autoPET volumes** (Gatidis et al. 2022, the autoPET challenge's ``false_pos_pix``/``false_neg_pix``):
  FP volume = total volume of predicted components with *no voxel* in the ground truth's class;
  FN volume = total volume of GT components with *no voxel* in the prediction's class (independent of the
  IoU matching). Their counts are ``fp_components``/``fn_components``.
* **Lesion-wise Dice / HD95 / NSD** (BraTS 2023 lesion-wise metrics, Moawad et al. 2023): mean over the GT
  lesions and the FP components; a matched lesion scores the metric of its pair, a missed lesion and a FP
  component score Dice 0, NSD 0, HD95 = the image diagonal in mm (the penalty the voxel metrics give a
  missed class, :func:`segbalance.evaluation.metrics.image_diagonal_mm`).
* **Sensitivity per size bin**: GT lesions binned by volume with edges ``size_bins_mm3`` (default 100 and
  1000 mm³): ``v < 100``, ``100 <= v < 1000``, ``v >= 1000`` (panoptica's ``recall_by_volume`` convention);
  volumes are voxel counts times the voxel volume in float64, compared with the edges after a relative
  1e-9 allowance, so rounding of the spacing product cannot move a lesion of exactly 100 mm³ below 100.
* **Per-component Dice / NSD** (``cc_dice``, ``cc_nsd``; CC-Metrics, :mod:`.components`): each GT
  component's Dice and NSD inside its Voronoi region, averaged over the components of the case.
* An unmatched lesion or component reports as ``iou`` its best IoU with any overlapping component of the
  other side (0 when it overlaps none), so a near miss is visible; its Dice and NSD stay 0 (a miss).

Per-pair HD95 and NSD use :func:`pair_surface_distances` (MONAI's edges and distances, checked equal to
:func:`segbalance.evaluation.metrics.surface_distances`) on the bounding box of the pair; the overlaps of
all pairs come from one ``np.unique`` over the voxels in both masks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from segbalance.evaluation.connected import _IN_PLANE, CONNECTIVITY, component_stats, connected_components
from segbalance.evaluation.metrics import (
    _check_inputs,
    _quantile,
    _tolerance_for,
    edge_distances,
    image_diagonal_mm,
)

MATCHING = ("iou", "overlap")
DEFAULT_SIZE_BINS_MM3 = (100.0, 1000.0)

#: per (case, class) lesion metrics, in CSV column order (size-bin columns follow, see :func:`bin_names`)
CASE_FIELDS = ("label", "flag", "n_gt", "n_pred", "tp", "fp", "fn", "sensitivity", "precision", "f1", "rq",
               "sq", "pq", "lesion_dice", "lesion_hd95", "lesion_nsd", "cc_dice", "cc_nsd", "fp_components",
               "fp_volume_mm3", "fn_components", "fn_volume_mm3")
#: per lesion (a GT lesion, or a predicted component left unmatched)
LESION_FIELDS = ("label", "kind", "id", "voxels", "volume_mm3", "size_bin", "centroid_zyx", "matched",
                 "match_id", "iou", "dice", "hd95", "nsd", "overlaps")


def bin_names(edges: Sequence[float]) -> list[str]:
    """Names of the size bins: ``(100, 1000)`` -> ``["lt100", "100to1000", "ge1000"]`` (mm³)."""
    e = [float(v) for v in edges]
    if not e:
        return ["all"]
    return [f"lt{e[0]:g}"] + [f"{a:g}to{b:g}" for a, b in zip(e, e[1:])] + [f"ge{e[-1]:g}"]


def _check_bins(size_bins_mm3: Sequence[float]) -> tuple[float, ...]:
    edges = tuple(float(v) for v in size_bins_mm3)
    if any(not (math.isfinite(v) and v > 0) for v in edges) or list(edges) != sorted(set(edges)):
        raise ValueError(f"size_bins_mm3 must be increasing positive volumes in mm³, got {size_bins_mm3}")
    return edges


def empty_class_row(label: int, fields: Sequence[str], flag: str = "both_empty") -> dict:
    """A per-class lesion row for a class absent from both files: counts 0, rates NaN."""
    counts = ("n_gt", "n_pred", "tp", "fp", "fn", "fp_components", "fn_components")
    row = {}
    for f in fields:
        if f == "case":
            continue
        row[f] = (label if f == "label" else flag if f == "flag"
                  else 0 if f in counts or f.startswith(("n_gt_", "tp_"))
                  else 0.0 if f.endswith("_mm3") else float("nan"))
    return row


@dataclass
class Matching:
    """Overlapping pairs and the one-to-one matching of ``n_gt`` GT and ``n_pred`` predicted components.

    ``gt_match[g]`` is the predicted id matched to GT component ``g`` (0: unmatched), ``pred_match[p]`` the
    reverse; index 0 unused. ``pairs`` is ``(g, p, intersection, iou)`` of every overlapping pair.
    """

    gt_match: np.ndarray
    pred_match: np.ndarray
    pairs: list[tuple[int, int, int, float]] = field(default_factory=list)


def match_components(gt_cc: np.ndarray, n_gt: int, pred_cc: np.ndarray, n_pred: int,
                     gt_voxels: np.ndarray, pred_voxels: np.ndarray, matching: str = "iou",
                     iou_threshold: float = 0.5, both: np.ndarray | None = None) -> Matching:
    """Greedy one-to-one matching on descending IoU (see the module docstring for the rule).

    ``gt_voxels``/``pred_voxels`` are the voxel counts per component id (index 0 ignored); ``both``
    optionally the boolean mask of voxels in both (else derived from the component maps).
    """
    if matching not in MATCHING:
        raise ValueError(f"matching must be one of {MATCHING}, got {matching!r}")
    both = np.flatnonzero((gt_cc.ravel() != 0) & (pred_cc.ravel() != 0) if both is None else both.ravel())
    key = gt_cc.ravel()[both].astype(np.int64) * (n_pred + 1) + pred_cc.ravel()[both]
    uniq, inter = np.unique(key, return_counts=True)
    g, p = uniq // (n_pred + 1), uniq % (n_pred + 1)
    iou = inter / (gt_voxels[g] + pred_voxels[p] - inter)
    order = np.lexsort((p, g, -inter, -iou))  # last key first: IoU desc, intersection desc, ids asc
    gt_match = np.zeros(n_gt + 1, np.int64)
    pred_match = np.zeros(n_pred + 1, np.int64)
    for i in order:
        if matching == "iou" and not iou[i] >= iou_threshold:
            break  # sorted: nothing further passes
        gi, pi = int(g[i]), int(p[i])
        if gt_match[gi] == 0 and pred_match[pi] == 0:
            gt_match[gi], pred_match[pi] = pi, gi
    pairs = [(int(a), int(b), int(c), float(d)) for a, b, c, d in zip(g, p, inter, iou)]
    return Matching(gt_match, pred_match, pairs)


@dataclass
class LesionResult:
    """Lesion metrics of one case: ``classes`` (one dict per class, :data:`CASE_FIELDS` + size bins) and
    ``lesions`` (one dict per GT lesion and per unmatched predicted component, :data:`LESION_FIELDS`)."""

    classes: list[dict]
    lesions: list[dict]


def pair_surface_distances(gm: np.ndarray, pm: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Directed edge-to-edge distances (mm, float32) of two non-empty masks: ``(d(P->G), d(G->P))``.

    The same numbers as MONAI 1.6's ``get_edge_surface_distance`` on CPU (:func:`.metrics.surface_distances`):
    :func:`segbalance.evaluation.metrics.edge_distances` (MONAI's edges, a KD-tree on coordinates scaled by
    the spacing), without MONAI's tensor and cropping overhead, which dominates on the small bounding boxes
    of single lesions; equality is checked in tests/test_evaluation_lesions.py.
    """
    return edge_distances(pm, gm, spacing)


def _pair_surface(gm: np.ndarray, pm: np.ndarray, spacing, tol: float,
                  percentile: float) -> tuple[float, float]:
    d_pg, d_gp = pair_surface_distances(gm, pm, spacing)
    hd = max(_quantile(d_pg, percentile / 100), _quantile(d_gp, percentile / 100))
    nsd = float((np.count_nonzero(d_pg <= tol) + np.count_nonzero(d_gp <= tol)) / (d_pg.size + d_gp.size))
    return hd, nsd


def _union_box(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def evaluate_lesions(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
    labels: Sequence[int] | None = None,
    connectivity: int = 26,
    matching: str = "iou",
    iou_threshold: float = 0.5,
    nsd_tolerance: float | Mapping[int, float] = 1.0,
    size_bins_mm3: Sequence[float] = DEFAULT_SIZE_BINS_MM3,
    percentile: float = 95.0,
) -> LesionResult:
    """Lesion-level metrics of one case for each class in ``labels`` (definitions in the module docstring).

    Args:
        pred, gt: integer label maps of the same shape.
        spacing: the ground truth's voxel spacing in mm in the arrays' axis order; default 1.
        labels: classes to evaluate; default every label >= 1 present in ``gt`` or ``pred``.
        connectivity: 6, 18 or 26 in 3D; 4 or 8 in 2D (where 6 means 4, 18 and 26 mean 8).
        matching: ``"iou"`` (IoU >= ``iou_threshold``) or ``"overlap"`` (any overlap), one-to-one.
        iou_threshold: IoU needed for a match with ``matching="iou"`` (panoptica's default 0.5).
        nsd_tolerance: surface Dice tolerance in mm, one value or ``{label: mm}``.
        size_bins_mm3: increasing bin edges in mm³ for the per-size sensitivity.
        percentile: Hausdorff percentile of the per-lesion distance.

    Example (5 GT lesions, 3 found, 2 false positives):
        >>> import numpy as np
        >>> gt = np.zeros((4, 4, 40), np.uint8); pred = np.zeros_like(gt)
        >>> for x in range(0, 40, 8): gt[1:3, 1:3, x:x + 2] = 1
        >>> for x in (0, 8, 16, 28, 36): pred[1:3, 1:3, x:x + 2] = 1
        >>> c = evaluate_lesions(pred, gt).classes[0]
        >>> c["tp"], c["fp"], c["fn"], c["sensitivity"], c["precision"], c["f1"]
        (3, 2, 2, 0.6, 0.6, 0.6)
    """
    spacing = _check_inputs(pred, gt, spacing)
    if not (0 < float(iou_threshold) <= 1):
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if matching not in MATCHING:
        raise ValueError(f"matching must be one of {MATCHING}, got {matching!r}")
    allowed = CONNECTIVITY.get(gt.ndim, ()) + (tuple(_IN_PLANE) if gt.ndim == 2 else ())
    if connectivity not in allowed:
        raise ValueError(f"connectivity must be one of {allowed} for a {gt.ndim}-D array, got {connectivity}")
    edges = _check_bins(size_bins_mm3)
    names = bin_names(edges)
    if labels is None:
        present = np.union1d(np.unique(gt), np.unique(pred))
        labels = [int(v) for v in present if v >= 1]
    voxel_mm3 = float(np.prod(spacing))
    diag = image_diagonal_mm(gt.shape, spacing)
    classes, lesions = [], []
    for label in (int(v) for v in labels):
        tol = _tolerance_for(label, nsd_tolerance)
        c_row, l_rows = _evaluate_class(pred == label, gt == label, label, spacing, voxel_mm3, diag, tol,
                                        connectivity, matching, float(iou_threshold), edges, names,
                                        percentile)
        classes.append(c_row)
        lesions.extend(l_rows)
    return LesionResult(classes, lesions)


def _evaluate_class(pm, gm, label, spacing, voxel_mm3, diag, tol, connectivity, matching, iou_threshold,
                    edges, names, percentile) -> tuple[dict, list[dict]]:
    nan = float("nan")
    # crop to the slices (first axis) holding the class: a view, no copy; components need no margin
    occupied = gm.reshape(gm.shape[0], -1).any(axis=1) | pm.reshape(pm.shape[0], -1).any(axis=1)
    if occupied.any():
        idx = np.flatnonzero(occupied)
        box = (slice(int(idx[0]), int(idx[-1]) + 1),) + (slice(None),) * (gm.ndim - 1)
        offset = np.array([box[0].start] + [0] * (gm.ndim - 1), float)
        gm, pm = gm[box], pm[box]
        gcc, n_g = connected_components(gm, connectivity)
        pcc, n_p = connected_components(pm, connectivity)
    else:
        offset, gcc, pcc, n_g, n_p = np.zeros(gm.ndim), None, None, 0, 0
    if n_g:
        g_stat = component_stats(gcc, gm, n_g)
        g_vox = g_stat["voxel_counts"]
    else:
        g_stat, g_vox = None, np.zeros(1, np.int64)
    if n_p:
        p_stat = component_stats(pcc, pm, n_p)
        p_vox = p_stat["voxel_counts"]
    else:
        p_stat, p_vox = None, np.zeros(1, np.int64)
    if n_g and n_p:
        m = match_components(gcc, n_g, pcc, n_p, g_vox, p_vox, matching, iou_threshold, both=gm & pm)
    else:
        m = Matching(np.zeros(n_g + 1, np.int64), np.zeros(n_p + 1, np.int64))
    inter_of = {(g, p): (i, iou) for g, p, i, iou in m.pairs}
    g_overlaps = np.zeros(n_g + 1, bool)
    p_overlaps = np.zeros(n_p + 1, bool)
    g_best = np.zeros(n_g + 1)
    p_best = np.zeros(n_p + 1)
    for g, p, _, iou in m.pairs:
        g_overlaps[g] = p_overlaps[p] = True
        g_best[g], p_best[p] = max(g_best[g], iou), max(p_best[p], iou)

    def size_bin(vol: float) -> str:
        # relative allowance: float rounding of voxels x prod(spacing) must not move a lesion of exactly an
        # edge's volume (100 mm³) into the bin below
        return names[int(np.searchsorted(edges, vol * (1 + 1e-9), side="right"))]

    def centroid(stat, i) -> list[float]:
        return [round(float(v), 2) for v in np.asarray(stat["centroids"][i]) + offset]

    rows = []
    dices, hds, nsds, ious = [], [], [], []
    for g in range(1, n_g + 1):
        vol = float(g_vox[g]) * voxel_mm3
        p = int(m.gt_match[g])
        row = {"label": label, "kind": "gt", "id": g, "voxels": int(g_vox[g]), "volume_mm3": vol,
               "size_bin": size_bin(vol), "centroid_zyx": centroid(g_stat, g), "matched": bool(p),
               "match_id": p, "overlaps": bool(g_overlaps[g])}
        if p:
            inter, iou = inter_of[(g, p)]
            region = _union_box(g_stat["bounding_boxes"][g], p_stat["bounding_boxes"][p])
            hd, nsd = _pair_surface(gcc[region] == g, pcc[region] == p, spacing, tol, percentile)
            dice = 2.0 * inter / (g_vox[g] + p_vox[p])
            row.update(iou=iou, dice=float(dice), hd95=hd, nsd=nsd)
            ious.append(iou)
        else:
            row.update(iou=float(g_best[g]), dice=0.0, hd95=diag, nsd=0.0)
        dices.append(row["dice"])
        hds.append(row["hd95"])
        nsds.append(row["nsd"])
        rows.append(row)
    for p in range(1, n_p + 1):
        if m.pred_match[p]:
            continue
        vol = float(p_vox[p]) * voxel_mm3
        rows.append({"label": label, "kind": "pred", "id": p, "voxels": int(p_vox[p]), "volume_mm3": vol,
                     "size_bin": size_bin(vol), "centroid_zyx": centroid(p_stat, p), "matched": False,
                     "match_id": 0, "overlaps": bool(p_overlaps[p]), "iou": float(p_best[p]), "dice": 0.0,
                     "hd95": diag,
                     "nsd": 0.0})
        dices.append(0.0)
        hds.append(diag)
        nsds.append(0.0)

    tp = int(np.count_nonzero(m.gt_match[1:]))
    fn, fp = n_g - tp, n_p - tp
    from segbalance.evaluation.components import per_component_metrics

    cc = per_component_metrics(pm, gm, spacing, tol, connectivity)
    flag = ("both_empty" if not (n_g or n_p) else "missed" if not n_p
            else "false_positive" if not n_g else "ok")
    fp_free = [p for p in range(1, n_p + 1) if not p_overlaps[p]]
    fn_free = [g for g in range(1, n_g + 1) if not g_overlaps[g]]
    sq = float(np.mean(ious)) if ious else (nan if not (n_g or n_p) else 0.0)
    rq = tp / (tp + 0.5 * fp + 0.5 * fn) if (n_g or n_p) else nan
    c_row = {
        "label": label, "flag": flag, "n_gt": n_g, "n_pred": n_p, "tp": tp, "fp": fp, "fn": fn,
        "sensitivity": tp / n_g if n_g else nan, "precision": tp / n_p if n_p else nan, "f1": rq, "rq": rq,
        "sq": sq, "pq": sq * rq if (n_g or n_p) else nan,
        "lesion_dice": float(np.mean(dices)) if dices else nan,
        "lesion_hd95": float(np.mean(hds)) if hds else nan,
        "lesion_nsd": float(np.mean(nsds)) if nsds else nan,
        "cc_dice": cc["cc_dice"], "cc_nsd": cc["cc_nsd"],
        "fp_components": len(fp_free), "fp_volume_mm3": float(p_vox[fp_free].sum()) * voxel_mm3,
        "fn_components": len(fn_free), "fn_volume_mm3": float(g_vox[fn_free].sum()) * voxel_mm3,
    }
    for name in names:
        sel = [r for r in rows if r["kind"] == "gt" and r["size_bin"] == name]
        found = sum(r["matched"] for r in sel)
        c_row[f"n_gt_{name}"] = len(sel)
        c_row[f"tp_{name}"] = int(found)
        c_row[f"sensitivity_{name}"] = found / len(sel) if sel else nan
    return c_row, rows
