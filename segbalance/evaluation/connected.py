"""Connected components of a mask (cc3d) and their statistics: the lesions of the lesion-level metrics.

Below :mod:`.lesions` and :mod:`.components`, which both use it (one import direction, no cycle).
"""

from __future__ import annotations

import numpy as np

__all__ = ["CONNECTIVITY", "connected_components", "component_stats"]

CONNECTIVITY = {3: (6, 18, 26), 2: (4, 8)}
_IN_PLANE = {6: 4, 18: 8, 26: 8}  # a 3D neighbourhood restricted to one plane, for 2D images


def connected_components(mask: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Label the connected components of a boolean mask (``cc3d``); returns ``(labels, n)``, ids 1..n."""
    from segbalance.extras import require

    require("cc3d", needed_for="lesion-level evaluation (connected components)")
    import cc3d

    allowed = CONNECTIVITY.get(mask.ndim)
    if allowed is None:
        raise ValueError(f"lesion components need a 2D or 3D array, got shape {mask.shape}")
    if mask.ndim == 2 and connectivity in _IN_PLANE:
        connectivity = _IN_PLANE[connectivity]
    if connectivity not in allowed:
        raise ValueError(f"connectivity must be one of {allowed} for a {mask.ndim}-D array, "
                         f"got {connectivity}")
    mask = np.ascontiguousarray(mask)
    mask = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8, copy=False)
    labels, n = cc3d.connected_components(mask, connectivity=connectivity, return_N=True)
    return labels, int(n)


def component_stats(cc: np.ndarray, mask: np.ndarray, n: int) -> dict:
    """Voxel counts, bounding boxes (tuples of slices) and centroids (voxel coordinates) of components
    ``1..n`` of ``cc``, from the voxels of ``mask`` only (work proportional to the foreground, unlike
    ``cc3d.statistics``, which scans the whole array). Index 0 is background (empty box)."""
    idx = np.flatnonzero(mask)
    ids = cc.ravel()[idx].astype(np.intp)
    counts = np.bincount(ids, minlength=n + 1).astype(np.int64)
    coords = np.unravel_index(idx, cc.shape)
    order = np.argsort(ids, kind="stable")
    starts = np.searchsorted(ids[order], np.arange(1, n + 1))
    lo = [np.minimum.reduceat(c[order], starts) for c in coords] if n else []
    hi = [np.maximum.reduceat(c[order], starts) for c in coords] if n else []
    boxes = [tuple(slice(0, 0) for _ in cc.shape)] + [
        tuple(slice(int(a[i]), int(b[i]) + 1) for a, b in zip(lo, hi)) for i in range(n)]
    safe = np.maximum(counts, 1)
    centroids = np.stack([np.bincount(ids, weights=c, minlength=n + 1) / safe for c in coords], axis=1)
    return {"voxel_counts": counts, "bounding_boxes": boxes, "centroids": centroids}
