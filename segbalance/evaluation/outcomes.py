"""Which lesions a prediction found, missed or invented, as masks, and a figure that outlines them.

The masks use the lesion matching of :mod:`segbalance.evaluation.lesions` (connected components, one-to-one
matching by IoU ≥ threshold or by any overlap), so a figure shows exactly what the lesion counts count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segbalance.evaluation.connected import connected_components
from segbalance.evaluation.lesions import match_components

__all__ = ["LesionOutcomes", "lesion_outcomes", "busiest_slice", "plot_lesion_outcomes", "OUTCOME_COLOURS"]

#: outline colour per outcome (found, missed, false positive)
OUTCOME_COLOURS = {"found": "#2ca02c", "missed": "#d62728", "false_positive": "#ffbf00"}


@dataclass
class LesionOutcomes:
    """Boolean masks of the ground-truth lesions found and missed and of the false-positive predicted
    components, with their counts."""

    found: np.ndarray
    missed: np.ndarray
    false_positive: np.ndarray
    n_found: int
    n_missed: int
    n_false_positive: int


def lesion_outcomes(
    pred: np.ndarray,
    gt: np.ndarray,
    label: int,
    connectivity: int = 26,
    matching: str = "iou",
    iou_threshold: float = 0.5,
) -> LesionOutcomes:
    """Found / missed GT lesions and false-positive components of class ``label`` in one case.

    A GT component is *found* when the one-to-one matching pairs it with a predicted component, *missed*
    otherwise; a predicted component that no GT component is paired with is a *false positive* — the
    ``tp``/``fn``/``fp`` of :func:`~segbalance.evaluation.lesions.evaluate_lesions` with the same settings.

    Example:
        >>> import numpy as np
        >>> gt = np.zeros((1, 1, 9), np.uint8); gt[0, 0, [1, 2, 6]] = 2
        >>> pred = np.zeros_like(gt); pred[0, 0, [1, 2, 8]] = 2
        >>> o = lesion_outcomes(pred, gt, 2)
        >>> o.n_found, o.n_missed, o.n_false_positive
        (1, 1, 1)
    """
    gm, pm = gt == label, pred == label
    gcc, n_gt = connected_components(gm, connectivity)
    pcc, n_pred = connected_components(pm, connectivity)
    g_vox = np.bincount(gcc.ravel(), minlength=n_gt + 1)
    p_vox = np.bincount(pcc.ravel(), minlength=n_pred + 1)
    m = match_components(gcc, n_gt, pcc, n_pred, g_vox, p_vox, matching, iou_threshold)
    found_ids = np.flatnonzero(m.gt_match[1:]) + 1
    fp_ids = np.flatnonzero(m.pred_match[1:] == 0) + 1
    found = np.isin(gcc, found_ids) & gm
    fp = np.isin(pcc, fp_ids) & pm
    return LesionOutcomes(found, gm & ~found, fp, int(found_ids.size), int(n_gt - found_ids.size),
                          int(fp_ids.size))


def busiest_slice(gt: np.ndarray, label: int, connectivity: int = 26) -> int:
    """The index along axis 0 whose slice cuts the most ground-truth lesions of ``label`` (ties: the most
    lesion voxels, then the lowest index); 0 when there is no lesion."""
    cc, n = connected_components(gt == label, connectivity)
    if n == 0:
        return 0
    per_slice = [np.unique(s[s > 0]).size for s in cc]
    voxels = (gt == label).reshape(gt.shape[0], -1).sum(1)
    return int(max(range(gt.shape[0]), key=lambda z: (per_slice[z], voxels[z], -z)))


def plot_lesion_outcomes(
    image: np.ndarray,
    outcomes: Mapping[str, LesionOutcomes],
    z: int,
    path: str | Path,
    spacing: Sequence[float] | None = None,
    title: str = "",
) -> None:
    """One panel per method: slice ``z`` of ``image`` (axis 0) with the found (green), missed (red) and
    false-positive (amber) lesions outlined, and the case's counts in the panel title. PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from segbalance.evaluation.report import save_figure

    names = list(outcomes)
    aspect = 1.0 if spacing is None else float(spacing[1]) / float(spacing[2])
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.6), squeeze=False)
    lo, hi = np.percentile(image[z], [1, 99])
    for ax, name in zip(axes[0], names):
        o = outcomes[name]
        ax.imshow(image[z], cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        for key, colour in OUTCOME_COLOURS.items():
            mask = getattr(o, key)[z]
            if mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.2)
        ax.set_title(f"{name}\nfound {o.n_found} · missed {o.n_missed} · FP {o.n_false_positive}", fontsize=9)
        ax.set_axis_off()
    handles = [Line2D([0], [0], color=c, lw=2, label=k.replace("_", " ")) for k, c in OUTCOME_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 0.9 if title else 1))
    save_figure(fig, path)
    plt.close(fig)
