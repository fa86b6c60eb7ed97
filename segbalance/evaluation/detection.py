"""Detection metrics from score maps: lesion candidates, their matching to ground-truth lesions, and the
FROC curve, sensitivity at fixed false positives per case, lesion-level average precision, case-level AUROC.

The definitions are picai_eval's (Saha et al. 2024, "Artificial intelligence and radiologists in prostate
cancer detection on MRI (PI-CAI)", Lancet Oncology; DIAGNijmegen/picai_eval 1.4, ``evaluate_case`` and
``Metrics``), written here from their description; docs/evaluation.md lists each with its source and the
points where this module differs. ``tests/test_evaluation_detection.py`` checks equality with picai_eval.

* **Candidates**: the connected components (``connectivity``, 26 by default as picai_eval) of
  ``score > floor``, each scored by its maximum score. For a detection map of constant-valued blobs (what
  picai_eval expects) that is each blob's value; for a probability map the floor decides what a candidate is.
* **Hit**: a candidate hits a GT lesion (a connected component of the class) when their IoU >= ``hit_iou``
  (picai_eval's ``min_overlap``, 0.1 there); ``hit_iou=0`` means any overlap.
* **Assignment** (picai_eval's): one-to-one, maximising first the number of (lesion, candidate) pairs that
  hit, then their total IoU (``scipy.optimize.linear_sum_assignment`` on ``1 + IoU`` where the pair hits,
  else 0). An assigned candidate is a TP with its score; an unassigned GT lesion is a FN (score 0); a
  candidate that hits no lesion is a FP with its score; a candidate that hits a lesion but lost it to
  another is neither (picai_eval's ``allow_unmatched_candidates_with_minimal_overlap=True``) and is counted
  as ``ignored``.
* **Case**: score = its highest candidate score (0 without candidates); positive when it has a GT lesion.

Over the cases of a method and class (:func:`detection_metrics`): at each threshold ``t`` (each distinct
candidate score, descending) TP(t) and FP(t) count the TP/FP entries with score >= t; the FROC curve is
sensitivity TP(t)/#GT lesions against FP(t)/#cases; the sensitivity at F false positives per case is the
highest sensitivity of a point with FP/case <= F (0 if none); AP = sum over thresholds of
(R(t_k) - R(t_(k-1))) * P(t_k) with P = TP/(TP+FP), R = TP/#GT (scikit-learn's step integral, as picai_eval;
missed lesions never reach a threshold, so they lower recall, not precision); AUROC = the area under the
case-level ROC curve of the case scores (Mann-Whitney, ties counted half, = scikit-learn's ``roc_auc``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from segbalance.evaluation.lesions import connected_components

#: false positives per case at which the sensitivity is reported (PI-CAI, LUNA16's FROC points)
FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class CaseDetections:
    """Candidates of one case and class, classified: ``entries`` are ``(is_lesion, score, iou)`` as
    picai_eval's ``y_list`` — TP ``(1, score, iou)``, FN ``(1, 0.0, 0.0)``, FP ``(0, score, best IoU with any
    lesion)`` — plus the case score and the count of ignored candidates (hit a lesion, not assigned)."""

    label: int
    n_gt: int
    n_candidates: int
    case_score: float
    entries: list[tuple[int, float, float]] = field(default_factory=list)
    ignored: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def lesion_candidates(score: np.ndarray, floor: float = 0.0,
                      connectivity: int = 26) -> tuple[np.ndarray, int, np.ndarray]:
    """Connected components of ``score > floor``: ``(component map, n, max score per id)`` (index 0 unused).

    Example (two constant blobs and one blob with a peak):
        >>> import numpy as np
        >>> s = np.zeros((1, 3, 9), np.float32)
        >>> s[0, :, 0:2] = 0.3; s[0, :, 4:6] = 0.9; s[0, 1, 8] = 0.5; s[0, 0, 8] = 0.2
        >>> cc, n, conf = lesion_candidates(s)
        >>> n, [round(float(c), 2) for c in conf[1:]]
        (3, [0.3, 0.9, 0.5])
    """
    if not math.isfinite(floor) or floor < 0:
        raise ValueError(f"the score floor must be finite and >= 0, got {floor}")
    if not np.isfinite(score).all():
        raise ValueError("score map holds NaN or infinite values")
    mask = score > floor
    cc, n = connected_components(mask, connectivity)
    conf = np.zeros(n + 1, np.float64)
    if n:
        idx = np.flatnonzero(mask)
        ids = cc.ravel()[idx]
        order = np.argsort(ids, kind="stable")
        starts = np.searchsorted(ids[order], np.arange(1, n + 1))
        conf[1:] = np.maximum.reduceat(score.ravel()[idx][order].astype(np.float64), starts)
    return cc, n, conf


def _iou_matrix(gt_cc: np.ndarray, n_gt: int, cand_cc: np.ndarray, n_c: int) -> np.ndarray:
    """IoU of every (GT lesion, candidate) pair, ``(n_gt, n_c)``, from one count of the voxels in both."""
    g_vox = np.bincount(gt_cc.ravel(), minlength=n_gt + 1)
    c_vox = np.bincount(cand_cc.ravel(), minlength=n_c + 1)
    both = np.flatnonzero((gt_cc.ravel() != 0) & (cand_cc.ravel() != 0))
    key = gt_cc.ravel()[both].astype(np.int64) * (n_c + 1) + cand_cc.ravel()[both]
    uniq, inter = np.unique(key, return_counts=True)
    g, c = uniq // (n_c + 1), uniq % (n_c + 1)
    iou = np.zeros((n_gt, n_c))
    iou[g - 1, c - 1] = inter / (g_vox[g] + c_vox[c] - inter)
    return iou


def detect_case(score: np.ndarray, gt_mask: np.ndarray, label: int = 1, floor: float = 0.0,
                hit_iou: float = 0.1, connectivity: int = 26) -> CaseDetections:
    """Candidates of ``score`` matched to the lesions of ``gt_mask`` (definitions in the module docstring).

    Example (two lesions; one found at 0.8, one missed; a false positive at 0.4):
        >>> import numpy as np
        >>> gt = np.zeros((1, 4, 20), bool); gt[0, 1:3, 1:4] = gt[0, 1:3, 10:13] = True
        >>> s = np.zeros(gt.shape, np.float32); s[0, 1:3, 1:4] = 0.8; s[0, 1:3, 16:18] = 0.4
        >>> d = detect_case(s, gt)
        >>> d.n_gt, d.case_score, sorted(d.entries)
        (2, 0.800000011920929, [(0, 0.4000000059604645, 0.0), (1, 0.0, 0.0), (1, 0.800000011920929, 1.0)])
    """
    from scipy.optimize import linear_sum_assignment

    if score.shape != gt_mask.shape:
        raise ValueError(f"score map shape {score.shape} differs from the ground truth's {gt_mask.shape}")
    if not 0 <= hit_iou <= 1:
        raise ValueError(f"hit_iou must be in [0, 1], got {hit_iou}")
    gt_mask = np.asarray(gt_mask, bool)
    # both maps cropped to the slices (first axis) holding a lesion or a candidate: a view, no copy
    fg = score > floor
    occupied = gt_mask.reshape(gt_mask.shape[0], -1).any(1) | fg.reshape(fg.shape[0], -1).any(1)
    if not occupied.any():
        return CaseDetections(int(label), 0, 0, 0.0)
    idx = np.flatnonzero(occupied)
    box = (slice(int(idx[0]), int(idx[-1]) + 1),)
    cand_cc, n_c, conf = lesion_candidates(score[box], floor, connectivity)
    gt_cc, n_gt = connected_components(gt_mask[box], connectivity)
    entries: list[tuple[int, float, float]] = []
    if n_gt and n_c:
        iou = _iou_matrix(gt_cc, n_gt, cand_cc, n_c)
        hits = iou > 0 if hit_iou == 0 else iou >= hit_iou
        weight = np.where(hits, 1.0 + iou, 0.0)
        rows, cols = linear_sum_assignment(weight, maximize=True)
        keep = weight[rows, cols] > 0
        rows, cols = rows[keep], cols[keep]
        assigned_c = set(cols.tolist())
        entries += [(1, float(conf[c + 1]), float(iou[g, c])) for g, c in zip(rows, cols)]
        entries += [(1, 0.0, 0.0)] * (n_gt - len(rows))
        hit_any = hits.any(axis=0)
        best = iou.max(axis=0)
        fps = [c for c in range(n_c) if not hit_any[c]]
        entries += [(0, float(conf[c + 1]), float(best[c])) for c in fps]
        ignored = n_c - len(assigned_c) - len(fps)
    else:
        entries += [(1, 0.0, 0.0)] * n_gt
        entries += [(0, float(conf[c]), 0.0) for c in range(1, n_c + 1)]
        ignored = 0
    case_score = float(conf[1:].max()) if n_c else 0.0
    return CaseDetections(int(label), int(n_gt), int(n_c), case_score, entries, int(ignored))


def _curve(cases: Sequence[CaseDetections]):
    """Thresholds (distinct candidate scores, descending), TP(t), FP(t), #GT lesions, #cases. Candidates
    score > floor >= 0, so the entries with score 0 are exactly the missed lesions (FN)."""
    y = np.array([e[0] for c in cases for e in c.entries], dtype=np.int64)
    s = np.array([e[1] for c in cases for e in c.entries], dtype=np.float64)
    n_gt = int(y.sum())
    ys, ss = y[s > 0], s[s > 0]
    order = np.argsort(-ss, kind="stable")
    ys, ss = ys[order], ss[order]
    tp_cum, fp_cum = np.cumsum(ys), np.cumsum(1 - ys)
    last = np.r_[np.flatnonzero(np.diff(ss)), len(ss) - 1].astype(np.int64) if len(ss) else np.zeros(0, int)
    return ss[last], tp_cum[last].astype(np.int64), fp_cum[last].astype(np.int64), n_gt, len(cases)


def roc_auc(targets: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve of binary ``targets`` ranked by ``scores`` (ties count half): the
    Mann-Whitney U statistic over n_pos * n_neg, from mid-ranks; NaN without positives or negatives.

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    t = np.asarray(targets, bool)
    s = np.asarray(scores, np.float64)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    first = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]  # start of each run of equal scores
    last = np.r_[first[1:], len(s)]
    mid = (first + last + 1) / 2.0  # mid-rank (1-based) of each run
    ranks = np.empty(len(s))
    ranks[order] = np.repeat(mid, last - first)
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection_metrics(cases: Sequence[CaseDetections], fp_rates: Sequence[float] = FP_RATES) -> dict:
    """FROC, sensitivity at ``fp_rates`` false positives per case, AP and case AUROC of one method and class.

    Returns a dict: ``n_cases``, ``n_positive_cases``, ``n_gt_lesions``, ``n_candidates``, ``tp``/``fp`` at
    the lowest threshold, ``ignored``, ``ap``, ``auroc``, ``sensitivity_at_fp`` (``{"0.125": …}``) and
    ``froc`` (``thresholds``, ``fp_per_case``, ``sensitivity``, starting at ``(0, 0)`` above every score).
    Rates are NaN where undefined (no GT lesion; AUROC without positive or negative cases).
    """
    thr, tp, fp, n_gt, n_cases = _curve(cases)
    nan = float("nan")
    sens = tp / n_gt if n_gt else np.full(len(tp), nan)
    fppc = fp / n_cases if n_cases else np.full(len(fp), nan)
    if n_gt:
        prec = tp / np.maximum(tp + fp, 1)
        rec_prev = np.r_[0.0, sens[:-1]]
        ap = float(np.sum((sens - rec_prev) * prec))
    else:
        ap = nan
    at = {}
    for f in fp_rates:
        ok = fppc <= f
        at[f"{f:g}"] = (float(sens[ok].max()) if ok.any() else 0.0) if n_gt else nan
    targets = [int(c.n_gt > 0) for c in cases]
    return {
        "n_cases": n_cases, "n_positive_cases": int(sum(targets)), "n_gt_lesions": n_gt,
        "n_candidates": int(sum(c.n_candidates for c in cases)),
        "tp": int(tp[-1]) if len(tp) else 0, "fp": int(fp[-1]) if len(fp) else 0,
        "ignored": int(sum(c.ignored for c in cases)),
        "ap": ap, "auroc": roc_auc(targets, [c.case_score for c in cases]),
        "sensitivity_at_fp": at,
        "froc": {"thresholds": [None] + thr.tolist(), "fp_per_case": [0.0] + fppc.tolist(),
                 "sensitivity": [0.0 if n_gt else nan] + sens.tolist()},
    }
