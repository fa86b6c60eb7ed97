"""Which label values a label map contains, fast.

``np.unique`` sorts every voxel (O(n log n)); a label map of class indices is better counted with
``np.bincount`` (one O(n) pass): 139 ms vs 13 ms on the 48×512×512 lung CT label in the training
sampler's measurement (docs/training.md).

>>> present_labels(np.array([[0, 2], [2, 5]]))
array([0, 2, 5])
>>> present_labels(np.array([-1, 3]))
array([-1,  3])
>>> present_labels(np.array([True, False]))
array([False,  True])
"""

from __future__ import annotations

import numpy as np

__all__ = ["present_labels"]

#: above this value ``np.bincount`` would allocate more than it saves; fall back to ``np.unique``
_MAX_BINCOUNT_LABEL = 1 << 16


def present_labels(array: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an integer (or bool) label map, as ``np.unique(array)`` returns them."""
    arr = np.asarray(array)
    dtype = arr.dtype
    if arr.dtype == bool:
        arr = arr.view(np.uint8)
    if arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        return np.unique(arr)
    flat = arr.ravel()
    lo, hi = int(flat.min()), int(flat.max())
    if lo < 0 or hi > _MAX_BINCOUNT_LABEL:
        return np.unique(flat)
    return np.flatnonzero(np.bincount(flat.astype(np.intp, copy=False), minlength=hi + 1)).astype(dtype)
