"""Instance maps of a ground truth: connected-component ids and their Voronoi regions, per class channel.

The instance losses (:mod:`.instance`) take these maps as an extra input made in the data loader
(``segbalance.preprocessing.InstanceMapsd`` for MONAI, the trainers' data-loader transform for nnU-Net);
this module holds the one implementation both use and the loss falls back to when called without maps.

* :func:`component_ids`: connected components of a binary mask (26-connectivity in 3D, 8 in 2D, the
  project's lesion default), ids ``1..N`` in scan order, 0 outside. cc3d when installed (``[io]`` extra),
  else ``scipy.ndimage.label`` with the full structuring element: the same partition.
* :func:`voronoi_regions`: every voxel gets the id of its nearest component (Euclidean distance in
  ``spacing`` units; a voxel equidistant from two components gets one of them): one region per component
  covering the whole image; all 0 when there is no component. One scipy feature transform for all
  components.
* :func:`instance_maps`: both, per channel of a ``(B, C, *spatial)`` one-hot target, as the loss reads
  them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["MAP_KINDS", "component_ids", "voronoi_regions", "channel_maps", "instance_maps", "check_maps"]

#: what a loss's ``instance_maps`` asks for
MAP_KINDS = ("components", "voronoi")
_ID_DTYPE_MAX = np.iinfo(np.int16).max  # nnU-Net carries the maps as int16 segmentation channels


def component_ids(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """``(ids, n)``: connected components of the boolean ``mask`` (2D or 3D), full connectivity."""
    mask = np.ascontiguousarray(mask, dtype=bool)
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask must be 2D or 3D, got shape {mask.shape}")
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int32), 0
    try:
        import cc3d
    except ImportError:
        cc3d = None
    if cc3d is not None:
        # uint8, not bool: cc3d 4.1 mislabels some bool inputs (a (1, 7) row gave [1 1 1 2 0 0 2])
        ids, n = cc3d.connected_components(
            mask.view(np.uint8), connectivity=26 if mask.ndim == 3 else 8, return_N=True, out_dtype=np.uint32
        )
        return ids.astype(np.int32, copy=False), int(n)
    from scipy import ndimage

    ids, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    return ids.astype(np.int32, copy=False), int(n)


def voronoi_regions(
    ids: np.ndarray, n: int | None = None, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """The Voronoi region map of component ``ids`` (0 = no component): each voxel gets its nearest id.

    One exact Euclidean feature transform (scipy's ``distance_transform_edt(..., return_indices=True)``,
    with ``spacing``) finds each voxel's nearest component voxel for all components at once; a voxel
    equidistant from two components gets one of them. One ``edt`` per component took 2.6–10× as long at
    2–16 components (``benchmarks/voronoi.py``, docs/benchmarks.md)."""
    ids = np.asarray(ids)
    n = int(ids.max()) if n is None else int(n)
    if n <= 0:
        return np.zeros(ids.shape, dtype=np.int32)
    if n == 1:
        return np.ones(ids.shape, dtype=np.int32)
    spacing = tuple(float(s) for s in (spacing or (1.0,) * ids.ndim))
    from scipy import ndimage

    idx = ndimage.distance_transform_edt(
        ids == 0, sampling=spacing, return_distances=False, return_indices=True
    )
    return ids[tuple(idx)].astype(np.int32, copy=False)


def channel_maps(mask: np.ndarray, kind: str, spacing: Sequence[float] | None = None) -> np.ndarray:
    """One channel's map: component ids (``"components"``) or Voronoi regions (``"voronoi"``)."""
    if kind not in MAP_KINDS:
        raise ValueError(f"kind must be one of {MAP_KINDS}, got {kind!r}")
    ids, n = component_ids(mask)
    if n > _ID_DTYPE_MAX:
        raise ValueError(f"{n} connected components in one channel: more than the {_ID_DTYPE_MAX} ids an "
                         "int16 map can carry (is the target a label map of a segmentation?)")
    return ids if kind == "components" else voronoi_regions(ids, n, spacing)


def instance_maps(
    onehot: Tensor,
    kind: str,
    spacing: Sequence[float] | None = None,
    channels: Sequence[int] | None = None,
) -> Tensor:
    """``(B, K, *spatial)`` int64 maps of the ``> 0.5`` voxels of each channel of ``onehot`` (on the CPU,
    then moved to ``onehot``'s device); channels not in ``channels`` (default: all) stay 0."""
    mask = (onehot.detach() > 0.5).cpu().numpy()
    out = np.zeros(mask.shape, dtype=np.int32)
    todo = range(mask.shape[1]) if channels is None else channels
    for b in range(mask.shape[0]):
        for c in todo:
            out[b, c] = channel_maps(mask[b, c], kind, spacing)
    return torch.from_numpy(out).to(device=onehot.device, dtype=torch.int64)


def check_maps(maps: Tensor, expected: tuple[int, ...], loss: str, argument: str = "instances") -> Tensor:
    """Validate precomputed maps: a tensor of integer ids ``>= 0`` of shape ``expected``; int64."""
    if not isinstance(maps, Tensor):
        raise ValueError(
            f"{loss}: {argument} must be a torch.Tensor of instance ids, got {type(maps).__name__}"
        )
    if tuple(maps.shape) != expected:
        raise ValueError(
            f"{loss}: {argument} must have shape (B, C, *spatial) = {expected} like the logits, "
            f"got {tuple(maps.shape)}"
        )
    if maps.is_floating_point():
        if not bool(torch.isfinite(maps).all()) or bool((maps != maps.round()).any()):
            raise ValueError(f"{loss}: {argument} must hold integer instance ids")
    if maps.numel() and int(maps.min()) < 0:
        raise ValueError(f"{loss}: {argument} must hold ids >= 0 (0 = no instance), found {int(maps.min())}")
    return maps.long()
