"""MONAI dictionary transforms for ``Compose`` pipelines: load any volume format, cut slices or patches,
and compute per-class label proportions.

* :class:`LoadVolumed` reads NIfTI, MHD/MHA, NRRD and DICOM (file or series folder) through
  :func:`segbalance.preprocessing.io.read_volume` — MONAI's ``LoadImaged`` needs the ``itk`` package for
  MHD/MHA/NRRD and without it fails with a misleading DICOM error. The result matches MONAI's
  ``ITKReader``/``NibabelReader``: array indexed ``(x, y, z)`` (``reverse_indexing=True``), ``affine``
  in RAS built from ITK's LPS direction, spacing and origin, and the metadata ``pixdim``,
  ``spatial_shape``, ``spacing``, ``original_affine``, ``space`` and ``filename_or_obj``.
* :class:`VolumeToSlicesd` turns a channel-first 3D sample into a list of 2D samples (MONAI's
  ``list_data_collate`` flattens the list into the batch); each slice's ``affine`` is the volume's shifted
  to that slice, and ``slice_index`` / ``slice_axis`` are recorded. Resize and window afterwards with
  MONAI's ``Resized`` and ``ScaleIntensityRanged``.
* :class:`VolumeToPatchesd` cuts grid or foreground-aware random 3D patches with the functions of
  :mod:`segbalance.preprocessing.patches` (MONAI's own ``GridPatchd`` / ``RandCropByLabelClassesd`` do
  the same per sample; this one shares the CLI's sampling rule and records ``patch_start``).
* :class:`LabelProportionsd` writes the per-class voxel proportion vector ``ŷ`` used by the
  label-marginal losses (paper 003, Eq. 5).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable
from monai.utils import convert_to_tensor

from segbalance.preprocessing.io import Volume, read_volume
from segbalance.preprocessing.patches import grid_patch_starts, random_patch_starts

__all__ = ["volume_affine_ras", "volume_to_metatensor", "LoadVolumed", "VolumeToSlicesd",
           "VolumeToPatchesd", "LabelProportionsd"]


def volume_affine_ras(volume: Volume) -> np.ndarray:
    """4x4 affine from ITK index ``(i, j, k) = (x, y, z)`` to RAS mm, as MONAI's ``ITKReader`` builds it:
    ``A = diag(-1, -1, 1, 1) @ [[D @ diag(spacing_xyz), origin], [0, 1]]``."""
    nd = volume.array.ndim
    spacing_xyz = np.asarray(volume.spacing[::-1], dtype=np.float64)
    affine = np.eye(nd + 1)
    affine[:nd, :nd] = volume.direction_matrix @ np.diag(spacing_xyz)
    affine[:nd, nd] = volume.origin
    flip = np.diag([-1.0, -1.0] + [1.0] * (nd - 1))  # LPS -> RAS flips x and y
    return flip @ affine


def volume_to_metatensor(volume: Volume, *, reverse_indexing: bool = True, channel_first: bool = False,
                         dtype: Any = np.float32, filename: str | None = None) -> MetaTensor:
    """A :class:`monai.data.MetaTensor` with MONAI's image metadata for ``volume``."""
    array = volume.array.T if reverse_indexing else volume.array  # (x, y, z) like ITKReader
    affine = volume_affine_ras(volume)
    if not reverse_indexing:  # index order (z, y, x): permute the affine's columns to match
        nd = volume.array.ndim
        perm = list(range(nd))[::-1] + [nd]
        affine = affine[:, perm]
    spacing = np.asarray(volume.spacing[::-1] if reverse_indexing else volume.spacing, dtype=np.float64)
    pixdim = np.ones(8, dtype=np.float32)
    pixdim[1:1 + len(spacing)] = spacing
    meta = {
        "affine": torch.as_tensor(affine, dtype=torch.float64),
        "original_affine": affine.copy(),
        "spatial_shape": np.asarray(array.shape, dtype=np.int64),
        "spacing": spacing,
        "pixdim": pixdim,
        "space": "RAS",
        "original_channel_dim": float("nan"),
        "filename_or_obj": filename if filename is not None else str(volume.path or ""),
    }
    data = np.ascontiguousarray(array.astype(dtype, copy=False) if dtype is not None else array)
    tensor = torch.as_tensor(data)
    if channel_first:
        tensor = tensor[None]
        meta["original_channel_dim"] = "no_channel"
    return MetaTensor(tensor, meta=meta)


class LoadVolumed(MapTransform):
    """Load ``data[key]`` (a path) into a :class:`MetaTensor` with geometry, for every key.

    Args:
        keys: keys holding file or DICOM-folder paths.
        ensure_channel_first: add a leading channel dimension.
        reverse_indexing: index the array ``(x, y, z)`` like MONAI's readers (default); ``False`` keeps
            SimpleITK's ``(z, y, x)`` (the affine is permuted to match).
        dtype: output dtype per key (``None`` keeps the file's); a sequence gives one per key, e.g.
            ``(np.float32, np.uint8)`` for image and label.
        series_uid: SeriesInstanceUID for DICOM folders holding several series.

    Example:
        >>> from monai.transforms import Compose
        >>> load = LoadVolumed(["image", "label"], ensure_channel_first=True)  # doctest: +SKIP
        >>> sample = load({"image": "case.mhd", "label": "case_seg.nrrd"})      # doctest: +SKIP
    """

    def __init__(self, keys: KeysCollection, ensure_channel_first: bool = False,
                 reverse_indexing: bool = True, dtype: Any = np.float32, series_uid: str | None = None,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.ensure_channel_first = ensure_channel_first
        self.reverse_indexing = reverse_indexing
        n = len(self.keys)
        self.dtypes = list(dtype) if isinstance(dtype, (list, tuple)) else [dtype] * n
        if len(self.dtypes) != n:
            raise ValueError(f"dtype gives {len(self.dtypes)} dtypes for {n} keys")
        self.series_uid = series_uid

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, dtype in self.key_iterator(d, self.dtypes):
            volume = read_volume(d[key], series_uid=self.series_uid)
            d[key] = volume_to_metatensor(volume, reverse_indexing=self.reverse_indexing,
                                          channel_first=self.ensure_channel_first, dtype=dtype,
                                          filename=str(d[key]))
        return d


def _shifted_affine(tensor: torch.Tensor, start: Sequence[int]) -> torch.Tensor:
    """The affine of a crop starting at voxel ``start`` (spatial dims of a channel-first tensor)."""
    affine = tensor.affine.clone() if isinstance(tensor, MetaTensor) else torch.eye(len(start) + 1)
    shift = torch.as_tensor(list(start), dtype=affine.dtype)
    affine[: len(start), -1] = affine[: len(start), -1] + affine[: len(start), : len(start)] @ shift
    return affine


def _crop(tensor: torch.Tensor, start: Sequence[int], size: Sequence[int], extra: dict) -> MetaTensor:
    index = (slice(None),) + tuple(slice(s, s + n) for s, n in zip(start, size))
    out = tensor[index]
    meta = dict(tensor.meta) if isinstance(tensor, MetaTensor) else {}
    affine = _shifted_affine(tensor, start)
    meta.update(extra)
    meta["spatial_shape"] = np.asarray(out.shape[1:], dtype=np.int64)
    meta["affine"] = affine
    return MetaTensor(out.as_tensor() if isinstance(out, MetaTensor) else out, meta=meta)


def _check_channel_first_3d(d: Mapping, key: Hashable) -> torch.Tensor:
    x = d[key]
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"data[{key!r}] must be a channel-first 3D tensor (C, X, Y, Z), got {shape}")
    return x


class VolumeToSlicesd(MapTransform):
    """Split channel-first 3D ``(C, X, Y, Z)`` samples into a list of 2D ``(C, ·, ·)`` samples.

    Args:
        keys: keys to slice (same spatial shape).
        axis: spatial axis to slice along (0, 1, 2 of the tensor's spatial dims; with ``LoadVolumed``'s
            default ``(x, y, z)`` indexing, axial slices are ``axis=2``).
        label_key: with ``foreground_only``, the label deciding which slices to keep.
        foreground_only: keep slices where ``data[label_key] > 0`` somewhere.
    """

    def __init__(self, keys: KeysCollection, axis: int = 2, label_key: str | None = None,
                 foreground_only: bool = False, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2 (spatial), got {axis}")
        if foreground_only and label_key is None:
            raise ValueError("foreground_only needs label_key")
        self.axis, self.label_key, self.foreground_only = axis, label_key, foreground_only

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return [d]
        shape = _check_channel_first_3d(d, keys[0]).shape
        for key in keys[1:]:
            if _check_channel_first_3d(d, key).shape[1:] != shape[1:]:
                raise ValueError(f"data[{key!r}] spatial shape {tuple(d[key].shape[1:])} differs from "
                                 f"data[{keys[0]!r}]'s {tuple(shape[1:])}")
        indices = range(shape[1 + self.axis])
        if self.foreground_only:
            lab = d[self.label_key]
            other = tuple(i for i in range(lab.ndim) if i != 1 + self.axis)
            keep = torch.as_tensor(lab > 0).any(dim=other) if lab.ndim == 4 else None
            indices = [i for i in indices if keep[i]]
        out = []
        for index in indices:
            sample = dict(d)
            for key in keys:
                start = [0, 0, 0]
                start[self.axis] = index
                size = list(d[key].shape[1:])
                size[self.axis] = 1
                crop = _crop(d[key], start, size, {"slice_index": index, "slice_axis": self.axis})
                sample[key] = crop.squeeze(1 + self.axis)
                sample[key].meta["spatial_shape"] = np.asarray(sample[key].shape[1:], dtype=np.int64)
            out.append(sample)
        return out


class VolumeToPatchesd(Randomizable, MapTransform):
    """Cut channel-first 3D samples into patches: a grid with ``overlap`` or ``num_samples`` random ones,
    ``fg_share`` of them centred on a foreground class drawn uniformly among the classes present in
    ``data[label_key]`` (see :func:`segbalance.preprocessing.patches.random_patch_starts`).

    Returns a list of samples with ``patch_start`` (spatial index of the corner) in each tensor's meta and
    the affine shifted to the patch. Volumes smaller than the patch must be padded first
    (``SpatialPadd``).
    """

    def __init__(self, keys: KeysCollection, patch_size: Sequence[int], mode: str = "random",
                 overlap: float = 0.0, num_samples: int = 4, fg_share: float = 0.5,
                 label_key: str | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if mode not in ("grid", "random"):
            raise ValueError(f"mode must be 'grid' or 'random', got {mode!r}")
        if mode == "random" and label_key is None:
            raise ValueError("random mode needs label_key")
        self.patch_size = tuple(int(p) for p in patch_size)
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be three positive integers, got {patch_size}")
        self.mode, self.overlap, self.num_samples = mode, overlap, num_samples
        self.fg_share, self.label_key = fg_share, label_key
        self._starts: list[tuple[tuple[int, ...], str]] = []

    def randomize(self, label: np.ndarray) -> None:
        self._starts = random_patch_starts(label, self.patch_size, self.num_samples, self.fg_share,
                                           np.random.default_rng(self.R.randint(2**31)))

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        ref = _check_channel_first_3d(d, keys[0])
        spatial = tuple(ref.shape[1:])
        if any(s < p for s, p in zip(spatial, self.patch_size)):
            raise ValueError(f"data[{keys[0]!r}] spatial shape {spatial} is smaller than patch_size "
                             f"{self.patch_size}; pad first (SpatialPadd)")
        if self.mode == "grid":
            starts = [(s, "grid") for s in grid_patch_starts(spatial, self.patch_size, self.overlap)]
        else:
            label = np.asarray(convert_to_tensor(d[self.label_key]).cpu())[0]
            self.randomize(label)
            starts = self._starts
        out = []
        for start, kind in starts:
            sample = dict(d)
            for key in keys:
                sample[key] = _crop(_check_channel_first_3d(d, key), start, self.patch_size,
                                    {"patch_start": np.asarray(start), "patch_kind": kind})
            out.append(sample)
        return out


class LabelProportionsd(MapTransform):
    """Write the per-class voxel proportions ``ŷ_c = |{v : y_v = c}| / |V|`` of a label map to
    ``data[output_key]`` (float32 tensor of length ``num_classes``), the target of the label-marginal
    penalties (paper 003, Eq. 5). Voxels equal to ``ignore_index`` are excluded from ``V``.

    Example:
        >>> t = LabelProportionsd("label", num_classes=3)
        >>> t({"label": torch.tensor([[[0, 0], [1, 2]]])})["label_proportions"]
        tensor([0.5000, 0.2500, 0.2500])
    """

    def __init__(self, keys: KeysCollection, num_classes: int, output_key: str = "label_proportions",
                 ignore_index: int | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if len(self.keys) != 1:
            raise ValueError(f"LabelProportionsd takes one label key, got {self.keys}")
        self.num_classes, self.output_key, self.ignore_index = num_classes, output_key, ignore_index

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            lab = convert_to_tensor(d[key], track_meta=False)
            if lab.is_floating_point():
                if not torch.equal(lab, lab.round()):
                    raise ValueError(f"data[{key!r}] has non-integer values; expected a label map")
            lab = lab.long().reshape(-1)
            if self.ignore_index is not None:
                lab = lab[lab != self.ignore_index]
            if lab.numel() and (lab.min() < 0 or lab.max() >= self.num_classes):
                raise ValueError(f"data[{key!r}] has values outside 0..{self.num_classes - 1} "
                                 f"(min {int(lab.min())}, max {int(lab.max())})")
            counts = torch.bincount(lab, minlength=self.num_classes).float()
            d[self.output_key] = counts / counts.sum().clamp_min(1.0)
        return d
