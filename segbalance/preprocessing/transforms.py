"""MONAI transforms for ``Compose`` pipelines: read any volume format, cut slices or patches (invertibly),
compute per-class label proportions and the signed distance maps of boundary losses.

* :class:`VolumeReader` is a :class:`monai.data.ImageReader` for NIfTI, MHD/MHA, NRRD and DICOM (file or
  series folder) through :func:`segbalance.io.volumes.read_volume`, so
  ``LoadImaged(keys, reader=VolumeReader())`` works without the ``itk`` package (MONAI's ``ITKReader``
  needs it for MHD/MHA/NRRD; without it ``LoadImage`` fails with a misleading DICOM error).
  :class:`LoadVolumed` is the same reader as a dictionary transform with a dtype per key. The result
  matches MONAI's ``ITKReader``/``NibabelReader``: array indexed ``(x, y, z)`` (``reverse_indexing=True``),
  ``affine`` in RAS built from ITK's LPS direction, spacing and origin, and the metadata ``pixdim``,
  ``spatial_shape``, ``spacing``, ``original_affine``, ``space`` and ``filename_or_obj``.
* :class:`VolumeToSlicesd` turns a 3D sample into a list of 2D samples and :class:`VolumeToPatchesd` into a
  list of 3D patches (MONAI's ``list_data_collate`` flattens the lists into the batch). Both follow
  MONAI's crop conventions: the ``affine`` is shifted to the slice/patch, the crop is recorded in
  ``applied_operations`` (``TraceableTransform``) and ``inverse`` — or ``Invertd`` with the pipeline —
  pads a slice/patch (or a prediction for it) back into a volume of the original shape. ``spatial_shape``
  stays the source volume's, as after MONAI's ``SpatialCrop``.
* :class:`LabelProportionsd` writes the per-class voxel proportion vector ``ŷ`` used by the
  label-marginal losses (paper 003, Eq. 5).
* :class:`SignedDistanceMapd` precomputes the signed distance maps ``φ_G`` of a label for the boundary
  losses (:mod:`segbalance.monai_losses.boundary`).
* :class:`InstanceMapsd` adds the connected components or their Voronoi regions per class, the extra
  input of the instance losses (:mod:`segbalance.monai_losses.instance`: blob loss, CC-DiceCE).

Labels given by ``label_key`` may be channel-first ``(1, X, Y, Z)`` or have no channel axis ``(X, Y, Z)``;
the keys that are cut may be either too (a key without a channel axis comes out without one).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segbalance.extras import require
from segbalance.io.volume import Volume
from segbalance.io.volumes import VOLUME_EXTENSIONS, read_volume, volume_format
from segbalance.monai_losses.distance import METHODS, normalize_spacing, signed_distance_map
from segbalance.preprocessing.patches import grid_patch_starts, random_patch_starts

require("monai", needed_for="the MONAI transforms of segbalance.preprocessing.transforms")

from monai.config import KeysCollection  # noqa: E402
from monai.data import ImageReader, MetaTensor  # noqa: E402
from monai.data.meta_obj import get_track_meta  # noqa: E402
from monai.transforms import BorderPad, InvertibleTransform, MapTransform, Randomizable  # noqa: E402
from monai.transforms.inverse import TraceableTransform  # noqa: E402
from monai.transforms.traits import MultiSampleTrait  # noqa: E402
from monai.transforms.utils import create_translate  # noqa: E402
from monai.utils import TraceKeys, convert_to_tensor, ensure_tuple  # noqa: E402

__all__ = ["volume_affine_ras", "volume_to_metatensor", "VolumeReader", "LoadVolumed", "VolumeToSlicesd",
           "VolumeToPatchesd", "LabelProportionsd", "SignedDistanceMapd", "InstanceMapsd"]


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


def _array_and_meta(volume: Volume, reverse_indexing: bool = True) -> tuple[np.ndarray, dict]:
    """The voxel array in MONAI's index order and MONAI's image metadata (affine as a numpy array)."""
    array = volume.array.T if reverse_indexing else volume.array  # (x, y, z) like ITKReader
    affine = volume_affine_ras(volume)
    if not reverse_indexing:  # index order (z, y, x): permute the affine's columns to match
        nd = volume.array.ndim
        affine = affine[:, list(range(nd))[::-1] + [nd]]
    spacing = np.asarray(volume.spacing[::-1] if reverse_indexing else volume.spacing, dtype=np.float64)
    pixdim = np.ones(8, dtype=np.float32)
    pixdim[1:1 + len(spacing)] = spacing
    meta = {
        "affine": affine,
        "original_affine": affine.copy(),
        "spatial_shape": np.asarray(array.shape, dtype=np.int64),
        "spacing": spacing,
        "pixdim": pixdim,
        "space": "RAS",
        "original_channel_dim": float("nan"),
        "filename_or_obj": str(volume.path or ""),
    }
    return array, meta


def volume_to_metatensor(volume: Volume, *, reverse_indexing: bool = True, channel_first: bool = False,
                         dtype: Any = np.float32, filename: str | None = None) -> MetaTensor:
    """A :class:`monai.data.MetaTensor` with MONAI's image metadata for ``volume``."""
    array, meta = _array_and_meta(volume, reverse_indexing)
    meta["affine"] = torch.as_tensor(meta["affine"], dtype=torch.float64)
    if filename is not None:
        meta["filename_or_obj"] = filename
    data = np.ascontiguousarray(array.astype(dtype, copy=False) if dtype is not None else array)
    tensor = torch.as_tensor(data)
    if channel_first:
        tensor = tensor[None]
        meta["original_channel_dim"] = "no_channel"
    return MetaTensor(tensor, meta=meta)


class VolumeReader(ImageReader):
    """MONAI image reader for NIfTI, MHD/MHA, NRRD, DICOM files and DICOM series folders.

    ``LoadImage(reader=VolumeReader())`` / ``LoadImaged(keys, reader=VolumeReader())`` then give the
    same arrays and RAS affines as :class:`LoadVolumed`. Several files (one sample's channels) are
    stacked on a new first axis, as MONAI's readers do; they must share shape and affine.

    Args:
        reverse_indexing: index the array ``(x, y, z)`` like MONAI's readers (default); ``False`` keeps
            SimpleITK's ``(z, y, x)`` (the affine is permuted to match).
        series_uid: SeriesInstanceUID for DICOM folders holding several series.
        read_kwargs: further keyword arguments of :func:`~segbalance.io.volumes.read_volume`.

    Example:
        >>> from monai.transforms import LoadImaged
        >>> load = LoadImaged(["image", "label"], reader=VolumeReader(), ensure_channel_first=True)
        >>> sample = load({"image": "ct.mhd", "label": "seg.nrrd"})  # doctest: +SKIP
    """

    def __init__(self, reverse_indexing: bool = True, series_uid: str | None = None, **read_kwargs):
        super().__init__()
        self.reverse_indexing = reverse_indexing
        self.series_uid = series_uid
        self.read_kwargs = read_kwargs

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        """Whether every file is a format :func:`read_volume` reads (or a folder, a DICOM series)."""
        return all(Path(f).is_dir() or volume_format(f) in VOLUME_EXTENSIONS for f in ensure_tuple(filename))

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs) -> Volume | list[Volume]:
        """Read one :class:`~segbalance.io.volume.Volume` per file (a list for several)."""
        kwargs = {"series_uid": self.series_uid, **self.read_kwargs, **kwargs}
        volumes = [read_volume(f, **kwargs) for f in ensure_tuple(data)]
        return volumes[0] if len(volumes) == 1 else volumes

    def get_data(self, img: Volume | Sequence[Volume]) -> tuple[np.ndarray, dict]:
        """The array (channels stacked first for several volumes) and the first volume's metadata."""
        pairs = [_array_and_meta(v, self.reverse_indexing) for v in ensure_tuple(img)]
        array, meta = pairs[0]
        for (other, other_meta), vol in zip(pairs[1:], ensure_tuple(img)[1:]):
            if other.shape != array.shape or not np.allclose(other_meta["affine"], meta["affine"], atol=1e-4):
                raise ValueError(f"{vol.path}: shape {other.shape} / affine differ from the first file's "
                                 f"{array.shape} ({meta['filename_or_obj']}); cannot stack as channels")
        if len(pairs) > 1:
            array = np.stack([a for a, _ in pairs], axis=0)
            meta["original_channel_dim"] = 0
        return array, meta


class LoadVolumed(MapTransform):
    """Load ``data[key]`` (a path) into a :class:`MetaTensor` with geometry, for every key.

    The dictionary form of :class:`VolumeReader`, with one dtype per key. ``LoadImaged(keys,
    reader=VolumeReader())`` gives the same tensors (MONAI's loader casts every key to one dtype).

    Args:
        keys: keys holding file or DICOM-folder paths.
        ensure_channel_first: add a leading channel dimension.
        reverse_indexing: index the array ``(x, y, z)`` like MONAI's readers (default); ``False`` keeps
            SimpleITK's ``(z, y, x)`` (the affine is permuted to match).
        dtype: output dtype per key (``None`` keeps the file's); a sequence gives one per key, e.g.
            ``(np.float32, np.uint8)`` for image and label.
        series_uid: SeriesInstanceUID for DICOM folders holding several series.
        label_map: ``{value: name}`` (or ``"1=GTV,2=Lung_L"``) for keys after the first that hold a
            DICOM-SEG/RTSTRUCT file: rasterized on the first key's image grid
            (:func:`~segbalance.preprocessing.pairing.read_label`).

    Example:
        >>> from monai.transforms import Compose
        >>> load = LoadVolumed(["image", "label"], ensure_channel_first=True)  # doctest: +SKIP
        >>> sample = load({"image": "case.mhd", "label": "case_seg.nrrd"})      # doctest: +SKIP
    """

    def __init__(self, keys: KeysCollection, ensure_channel_first: bool = False,
                 reverse_indexing: bool = True, dtype: Any = np.float32, series_uid: str | None = None,
                 allow_missing_keys: bool = False, label_map: dict | str | None = None):
        super().__init__(keys, allow_missing_keys)
        self.label_map = label_map
        self.ensure_channel_first = ensure_channel_first
        self.reverse_indexing = reverse_indexing
        n = len(self.keys)
        self.dtypes = list(dtype) if isinstance(dtype, (list, tuple)) else [dtype] * n
        if len(self.dtypes) != n:
            raise ValueError(f"dtype gives {len(self.dtypes)} dtypes for {n} keys")
        self.reader = VolumeReader(reverse_indexing=reverse_indexing, series_uid=series_uid)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from segbalance.io.dicom_labels import find_dicom_label
        from segbalance.preprocessing.pairing import read_label

        d = dict(data)
        reference = None  # the first key's volume: the grid DICOM-SEG/RTSTRUCT labels are rasterized on
        for key, dtype in self.key_iterator(d, self.dtypes):
            if reference is not None and find_dicom_label(d[key]) is not None:
                volume = read_label(d[key], reference, self.label_map)
            else:
                volume = self.reader.read(d[key])
            reference = volume if reference is None else reference
            d[key] = volume_to_metatensor(volume, reverse_indexing=self.reverse_indexing,
                                          channel_first=self.ensure_channel_first, dtype=dtype,
                                          filename=str(d[key]))
        return d


def _spatial_3d(d: Mapping, key: Hashable, transform: str) -> tuple[int, ...]:
    """Spatial shape of ``d[key]``: a channel-first ``(C, X, Y, Z)`` or channel-less ``(X, Y, Z)`` tensor."""
    x = d[key]
    if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4):
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{transform}: data[{key!r}] must be a 3D tensor, channel-first (C, X, Y, Z) or "
                         f"without channel (X, Y, Z), got {shape}")
    return tuple(x.shape[-3:])


def _check_same_spatial(d: Mapping, keys: list, transform: str) -> tuple[int, ...]:
    spatial = _spatial_3d(d, keys[0], transform)
    for key in keys[1:]:
        if _spatial_3d(d, key, transform) != spatial:
            raise ValueError(f"{transform}: data[{key!r}] spatial shape {tuple(d[key].shape[-3:])} differs "
                             f"from data[{keys[0]!r}]'s {spatial}")
    return spatial


def _label_array(d: Mapping, key: Hashable, spatial: tuple[int, ...], transform: str) -> np.ndarray:
    """``d[key]`` as a ``(X, Y, Z)`` numpy label map (a channel axis of size 1 is dropped)."""
    if key not in d:
        raise KeyError(f"{transform}: label_key {key!r} is not in the data (keys {list(d)})")
    lab = convert_to_tensor(d[key], track_meta=False)
    if lab.ndim == 4 and lab.shape[0] == 1:
        lab = lab[0]
    if tuple(lab.shape) != spatial:
        raise ValueError(f"{transform}: label data[{key!r}] must be (X, Y, Z) or (1, X, Y, Z) with spatial "
                         f"shape {spatial}, got {tuple(d[key].shape)}")
    return np.asarray(lab.cpu())


class _InvertibleCrop(InvertibleTransform):
    """Crops recorded in ``applied_operations`` the way MONAI's ``Crop`` records them (``"cropped"``: the
    voxels removed before/after each spatial axis), so ``inverse`` pads them back with ``BorderPad``."""

    def _crop(self, x: torch.Tensor, start: Sequence[int], size: Sequence[int], extra_meta: dict,
              squeeze_axis: int | None = None) -> torch.Tensor:
        no_channel = x.ndim == 3
        if no_channel:
            x = x[None]
        if not isinstance(x, MetaTensor):
            x = MetaTensor(x)
        spatial = tuple(x.shape[1:])
        cropped = [v for s, n, o in zip(start, size, spatial) for v in (int(s), int(o - s - n))]
        info = {"cropped": cropped, "no_channel": no_channel, "squeezed_axis": squeeze_axis}
        meta = TraceableTransform.track_transform_meta(
            x, sp_size=list(size), affine=create_translate(3, list(start)), extra_info=info,
            orig_size=spatial, transform_info=self.get_transform_info(),
        )
        index = (slice(None),) + tuple(slice(int(s), int(s + n)) for s, n in zip(start, size))
        out = convert_to_tensor(x.as_tensor(), track_meta=get_track_meta())[index]
        if isinstance(out, MetaTensor):
            out = out.copy_meta_from(meta)
            out.meta.update(extra_meta)
        if squeeze_axis is not None:
            out = out.squeeze(1 + squeeze_axis)
        return out[0] if no_channel else out

    def _uncrop(self, x: torch.Tensor) -> torch.Tensor:
        op = self.pop_transform(x)
        info = op[TraceKeys.EXTRA_INFO]
        if info["no_channel"]:
            x = x[None]
        if info["squeezed_axis"] is not None:
            x = x.unsqueeze(1 + info["squeezed_axis"])
        pad = BorderPad(info["cropped"])
        with pad.trace_transform(False):
            out = pad(x)
        return out[0] if info["no_channel"] else out

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Pad each key's slice/patch back to its place in a zero volume of the source's shape."""
        d = dict(data)
        for key in self.key_iterator(d):  # type: ignore[attr-defined]
            d[key] = self._uncrop(d[key])
        return d


class VolumeToSlicesd(MapTransform, _InvertibleCrop, MultiSampleTrait):
    """Split 3D ``(C, X, Y, Z)`` (or ``(X, Y, Z)``) samples into a list of 2D ``(C, ·, ·)`` samples.

    Each slice's ``affine`` is the volume's shifted to that slice (kept 4x4), ``slice_index`` and
    ``slice_axis`` are in its metadata, and the cut is recorded so that ``inverse`` / ``Invertd`` puts
    the slice (or a prediction for it) back at its place in a zero volume of the source's shape.

    Args:
        keys: keys to slice (same spatial shape).
        axis: spatial axis to slice along (0, 1, 2 of the tensor's spatial dims; with ``LoadVolumed``'s
            default ``(x, y, z)`` indexing, axial slices are ``axis=2``).
        label_key: with ``foreground_only``, the label deciding which slices to keep, ``(1, X, Y, Z)`` or
            ``(X, Y, Z)``.
        foreground_only: keep slices where ``data[label_key] > 0`` somewhere.
    """

    def __init__(self, keys: KeysCollection, axis: int = 2, label_key: str | None = None,
                 foreground_only: bool = False, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if isinstance(axis, bool) or axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2 (spatial), got {axis!r}")
        if foreground_only and label_key is None:
            raise ValueError("foreground_only needs label_key")
        self.axis, self.label_key, self.foreground_only = axis, label_key, foreground_only

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return [d]
        spatial = _check_same_spatial(d, keys, "VolumeToSlicesd")
        indices: Sequence[int] = range(spatial[self.axis])
        if self.foreground_only:
            lab = _label_array(d, self.label_key, spatial, "VolumeToSlicesd") > 0
            keep = lab.any(axis=tuple(i for i in range(3) if i != self.axis))
            indices = [int(i) for i in np.flatnonzero(keep)]
        out = []
        for index in indices:
            sample = dict(d)
            start, size = [0, 0, 0], list(spatial)
            start[self.axis], size[self.axis] = index, 1
            for key in keys:
                sample[key] = self._crop(d[key], start, size, {"slice_index": index, "slice_axis": self.axis},
                                         squeeze_axis=self.axis)
            out.append(sample)
        return out


def _positive_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


class VolumeToPatchesd(Randomizable, MapTransform, _InvertibleCrop, MultiSampleTrait):
    """Cut 3D ``(C, X, Y, Z)`` (or ``(X, Y, Z)``) samples into patches: a grid with ``overlap`` or
    ``num_samples`` random ones, ``fg_share`` of them centred on a foreground class drawn uniformly among
    the classes present in ``data[label_key]`` (see
    :func:`segbalance.preprocessing.patches.random_patch_starts`).

    Returns a list of samples with ``patch_start`` (spatial index of the corner) and ``patch_kind`` in each
    tensor's meta and the affine shifted to the patch; ``inverse`` / ``Invertd`` pads a patch back to its
    place in a zero volume of the source's shape. Volumes smaller than the patch must be padded first
    (``SpatialPadd``). Arguments are checked here, at construction (``ValueError`` naming the argument).
    """

    def __init__(self, keys: KeysCollection, patch_size: Sequence[int], mode: str = "random",
                 overlap: float = 0.0, num_samples: int = 4, fg_share: float = 0.5,
                 label_key: str | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if mode not in ("grid", "random"):
            raise ValueError(f"mode must be 'grid' or 'random', got {mode!r}")
        sizes = list(patch_size) if isinstance(patch_size, (Sequence, np.ndarray, torch.Tensor)) else None
        if (isinstance(patch_size, str) or sizes is None or len(sizes) != 3
                or not all(_positive_int(p) or (isinstance(p, float) and p.is_integer() and p >= 1)
                           for p in sizes)):
            raise ValueError(f"patch_size must be three positive integers, got {patch_size!r}")
        if isinstance(overlap, bool) or not isinstance(overlap, numbers.Real) or not 0 <= overlap < 1:
            raise ValueError(f"overlap must be a number in [0, 1), got {overlap!r}")
        if not _positive_int(num_samples):
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        if (isinstance(fg_share, bool) or not isinstance(fg_share, numbers.Real) or math.isnan(fg_share)
                or not 0 <= fg_share <= 1):
            raise ValueError(f"fg_share must be a number in [0, 1], got {fg_share!r}")
        if mode == "random" and label_key is None:
            raise ValueError("label_key is needed in random mode (patches are centred on its foreground)")
        self.patch_size = tuple(int(p) for p in sizes)
        self.mode, self.overlap, self.num_samples = mode, float(overlap), int(num_samples)
        self.fg_share, self.label_key = float(fg_share), label_key
        self._starts: list[tuple[tuple[int, ...], str]] = []

    def randomize(self, label: np.ndarray) -> None:
        self._starts = random_patch_starts(label, self.patch_size, self.num_samples, self.fg_share,
                                           np.random.default_rng(self.R.randint(2**31)))

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return [d]
        spatial = _check_same_spatial(d, keys, "VolumeToPatchesd")
        if any(s < p for s, p in zip(spatial, self.patch_size)):
            raise ValueError(f"data[{keys[0]!r}] spatial shape {spatial} is smaller than patch_size "
                             f"{self.patch_size}; pad first (SpatialPadd)")
        if self.mode == "grid":
            starts = [(s, "grid") for s in grid_patch_starts(spatial, self.patch_size, self.overlap)]
        else:
            self.randomize(_label_array(d, self.label_key, spatial, "VolumeToPatchesd"))
            starts = self._starts
        out = []
        for start, kind in starts:
            sample = dict(d)
            for key in keys:
                sample[key] = self._crop(d[key], start, self.patch_size,
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


def _label_spacing(label, spacing, spatial_dims: int) -> tuple[float, ...]:
    """The spacing the maps of ``label`` use: the transform's ``spacing`` if given, else the MetaTensor's
    ``pixdim``, else 1 per axis."""
    if spacing is not None:
        return normalize_spacing(spacing, spatial_dims)
    if isinstance(label, MetaTensor):
        return normalize_spacing([float(s) for s in label.pixdim[:spatial_dims]], spatial_dims)
    return (1.0,) * spatial_dims


def _channel_first_label(
    label, owner: str, num_classes: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(data, labels)``: ``label`` as a plain channel-first tensor ``(C, H, W)`` or ``(C, D, H, W)``,
    and for a ``(1, *spatial)`` label map of ``num_classes > 1`` classes its int64 map ``(*spatial)``
    (else ``None``). A label map needs ``num_classes`` and values in ``[0, num_classes)``. Errors name
    the transform ``owner``."""
    data = torch.as_tensor(np.asarray(label) if not isinstance(label, torch.Tensor) else label)
    if isinstance(data, MetaTensor):
        data = data.as_tensor()
    if data.ndim not in (3, 4):
        raise ValueError(f"{owner}: label must be channel-first (C, H, W) or (C, D, H, W), "
                         f"got {tuple(data.shape)}")
    if data.shape[0] == 1 and num_classes is None:
        raise ValueError(f"{owner}: num_classes is required for a (1, *spatial) label map "
                         "(use 1 for a binary mask)")
    if data.shape[0] != 1 or num_classes == 1:
        return data, None
    labels = data[0].long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{owner}: label values must lie in [0, {num_classes - 1}] for num_classes="
                         f"{num_classes}, found [{int(labels.min())}, {int(labels.max())}]")
    return data, labels


class SignedDistanceMapd(MapTransform):
    """Add the signed distance maps ``φ_G`` (:func:`segbalance.monai_losses.distance.signed_distance_map`)
    of ``keys``, for the boundary losses: ``loss(logits, batch["label"], dist=batch["dist"])``.

    Put it at the end of a ``Compose`` (after spatial augmentation, which would otherwise have to
    resample the maps). The label is a channel-first label map ``(1, *spatial)`` (one-hot encoded with
    ``num_classes``) or a one-hot ``(C, *spatial)`` array/tensor. The maps ``(C, *spatial)`` float32 are
    stored under ``output_key`` as a :class:`~monai.data.MetaTensor` carrying the label's metadata.
    Distances are in physical units: the spacing is ``spacing`` when given, else the label's ``pixdim``
    (from the MetaTensor's affine, in array axis order), else 1.

    Args:
        keys: the label key(s).
        output_key: where to store the maps; with several ``keys``, a sequence of the same length.
        num_classes: number of classes to one-hot a label map; required for ``(1, *spatial)`` labels.
        spacing: override of the voxel spacing (array axis order), or one number.
        method: EDT implementation (:func:`~segbalance.monai_losses.distance.euclidean_distance_transform`).
        allow_missing_keys: don't raise when a key is absent.

    Example:
        >>> import torch
        >>> from monai.data import MetaTensor
        >>> affine = torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0]))
        >>> label = MetaTensor(torch.tensor([[[0, 1, 1, 1, 0, 0]]]), affine=affine)
        >>> out = SignedDistanceMapd("label", num_classes=2)({"label": label})
        >>> out["dist"][1].tolist()   # spacing (2, 1): along W steps of 1
        [[1.0, 0.0, -1.0, 0.0, 1.0, 2.0]]
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_key: str | Sequence[str] = "dist",
        num_classes: int | None = None,
        spacing: float | Sequence[float] | None = None,
        method: str = "auto",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        output_keys = [output_key] if isinstance(output_key, str) else list(output_key)
        if len(output_keys) != len(self.keys):
            raise ValueError(
                f"output_key must name one output per key ({len(self.keys)}), got {output_key!r}"
            )
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if spacing is not None:
            normalize_spacing(spacing, 1 if isinstance(spacing, (int, float)) else len(spacing))
        self.output_keys = output_keys
        self.num_classes = num_classes
        self.spacing = spacing
        self.method = method

    def maps(self, label) -> torch.Tensor:
        """Signed maps ``(C, *spatial)`` of one channel-first label."""
        data, labels = _channel_first_label(label, type(self).__name__, self.num_classes)
        if labels is not None:
            onehot = torch.nn.functional.one_hot(labels, self.num_classes).movedim(-1, 0)
        else:
            onehot = data
        spacing = _label_spacing(label, self.spacing, data.ndim - 1)
        return signed_distance_map(onehot[None], spacing, method=self.method)[0]

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key, out_key in self.key_iterator(d, self.output_keys):
            label = d[key]
            dist = self.maps(label)
            if isinstance(label, MetaTensor):
                dist = MetaTensor(dist, meta=dict(label.meta), applied_operations=[])
            d[out_key] = dist
        return d


class InstanceMapsd(MapTransform):
    """Add the instance maps of ``keys`` that the instance losses read: ``loss(logits, batch["label"],
    batch["instances"])`` (:mod:`segbalance.monai_losses.instance`).

    ``kind="components"`` (blob loss): the connected components of each class (26-connectivity in 3D, 8
    in 2D), ids ``1..N`` per channel, 0 elsewhere; ``kind="voronoi"`` (CC-DiceCE): every voxel gets the id
    of its nearest component of the class (Euclidean, in physical units). The label is a channel-first
    label map ``(1, *spatial)`` (with ``num_classes``; ``num_classes=1``: a binary mask, one channel out)
    or a one-hot / multi-label ``(C, *spatial)`` array; the maps ``(C, *spatial)`` int64 are stored under
    ``output_key`` (a :class:`~monai.data.MetaTensor` with the label's metadata when the label is one).
    Put it at the end of a ``Compose``, after the spatial transforms (the maps are of the label as the
    loss sees it); :meth:`for_loss` configures it from a loss module.

    Args:
        keys: the label key(s).
        kind: ``"components"`` or ``"voronoi"``.
        num_classes: classes to one-hot a ``(1, *spatial)`` label map (1 for a binary mask).
        include_background: make channel 0's maps too (default ``False``: the losses' default; its channel
            is left 0).
        output_key: where to store the maps; with several ``keys``, a sequence of the same length.
        spacing: voxel spacing for the Voronoi distances (array order), else the label's ``pixdim``, else 1.
        allow_missing_keys: don't raise when a key is absent.

    Example:
        >>> import torch
        >>> label = torch.tensor([[[1, 1, 0, 0, 0, 1]]])
        >>> InstanceMapsd("label", "components", num_classes=2)({"label": label})["instances"][1].tolist()
        [[1, 1, 0, 0, 0, 2]]
        >>> InstanceMapsd("label", "voronoi", num_classes=2)({"label": label})["instances"][1].tolist()
        [[1, 1, 1, 1, 2, 2]]
    """

    def __init__(
        self,
        keys: KeysCollection,
        kind: str = "components",
        num_classes: int | None = None,
        include_background: bool = False,
        output_key: str | Sequence[str] = "instances",
        spacing: float | Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        from segbalance.monai_losses.instance_maps import MAP_KINDS

        super().__init__(keys, allow_missing_keys)
        if kind not in MAP_KINDS:
            raise ValueError(f"InstanceMapsd: kind must be one of {MAP_KINDS}, got {kind!r}")
        output_keys = [output_key] if isinstance(output_key, str) else list(output_key)
        if len(output_keys) != len(self.keys):
            raise ValueError(
                f"InstanceMapsd: output_key must name one output per key ({len(self.keys)}), "
                f"got {output_key!r}"
            )
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"InstanceMapsd: num_classes must be a positive int, got {num_classes!r}")
        if spacing is not None:
            normalize_spacing(spacing, 1 if isinstance(spacing, (int, float)) else len(spacing))
        self.kind = kind
        self.num_classes = num_classes
        self.include_background = bool(include_background)
        self.output_keys = output_keys
        self.spacing = spacing

    @classmethod
    def for_loss(cls, loss, keys: KeysCollection = "label", num_classes: int | None = None, **kwargs):
        """The transform that makes the maps ``loss``
        (a :class:`~segbalance.monai_losses.instance.InstanceLoss`) reads, with its ``include_background``
        and ``spacing``."""
        kind = getattr(loss, "instance_maps", None)
        if kind is None:
            raise ValueError(f"{type(loss).__name__} reads no instance maps (it is not an instance loss)")
        kwargs.setdefault("include_background", loss.include_background)
        if getattr(loss, "spacing", None) is not None:
            kwargs.setdefault("spacing", loss.spacing)
        return cls(keys, kind, num_classes=num_classes, **kwargs)

    def maps(self, label) -> torch.Tensor:
        """Maps ``(C, *spatial)`` int64 of one channel-first label."""
        from segbalance.monai_losses.instance_maps import channel_maps

        data, labels = _channel_first_label(label, "InstanceMapsd", self.num_classes)
        if labels is not None:
            masks = [(labels == c).numpy() for c in range(self.num_classes)]
        else:
            masks = [(data[c] > 0.5).numpy() for c in range(data.shape[0])]
        spacing = _label_spacing(label, self.spacing, data.ndim - 1)
        first = 0 if self.include_background or len(masks) == 1 else 1
        out = np.zeros((len(masks), *data.shape[1:]), dtype=np.int64)
        for c in range(first, len(masks)):
            out[c] = channel_maps(masks[c], self.kind, spacing)
        return torch.from_numpy(out)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key, out_key in self.key_iterator(d, self.output_keys):
            label = d[key]
            maps = self.maps(label)
            if isinstance(label, MetaTensor):
                maps = MetaTensor(maps, meta=dict(label.meta), applied_operations=[])
            d[out_key] = maps
        return d
