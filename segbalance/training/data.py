"""Training data for the MONAI pipeline: checked cases, 2D slices or 3D patches, random draws seeded per item.

Cases are found, read and checked by :mod:`segbalance.preprocessing.pairing` exactly as ``segbalance
convert`` does (``find_cases`` + ``load_case``: same grid and geometry for image and label, integer labels);
every unusable case is listed with its file in one error. Volumes are kept in memory as channel-first
float32/int64 arrays in (z, y, x) order and fed through MONAI transforms: the intensity window of
:mod:`segbalance.preprocessing.slices` applied with ``ScaleIntensityRanged`` (CT) or
``ScaleIntensityRangePercentilesd`` (percentile windows), ``NormalizeIntensityd`` (MRI z-score), then
``Resized`` to a square slice (2D, the Dual Focal protocol) or
:class:`~segbalance.preprocessing.transforms.VolumeToPatchesd` (3D, the sampling rule of ``segbalance
convert --patches``: half of the patches centred on a foreground class drawn uniformly among the classes
present, so a small lesion is seen as often as a large organ).

:class:`EpochSeededDataset` makes every random draw a function of ``(seed, epoch, item index)``: the
transforms are reseeded before each item, so an epoch gives the same samples whether it runs first,
after ``--resume``, or in DataLoader workers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from segbalance.errors import UserError
from segbalance.preprocessing.slices import Window, parse_window

__all__ = [
    "load_cases",
    "is_ct",
    "resolve_window",
    "intensity_transform",
    "build_train_dataset",
    "EpochSeededDataset",
    "derived_seed",
    "DEFAULT_CT_WINDOW",
    "FG_SHARE",
]

DEFAULT_CT_WINDOW = "ct-abdomen"  # preset of segbalance.preprocessing.slices.parse_window (40, 400 HU)
ZSCORE = "zscore"  # --window value for z-score normalisation (the default for non-CT data)
FG_SHARE = 0.5  # share of 3D patches centred on a foreground class


def _load_one(case, num_classes: int | None) -> dict:
    from segbalance.preprocessing.pairing import load_case

    if len(case.images) != 1:
        raise UserError(f"{case.images[0]}: case {case.case_id!r} has {len(case.images)} image channels; "
                        f"segbalance train takes one")
    known = set(range(num_classes)) if num_classes else None
    images, label = load_case(case, known)
    image = images[0]
    if image.array.ndim != 3:
        raise UserError(f"{case.images[0]}: a 2D image (shape {image.array.shape}); segbalance train needs "
                        f"3D volumes (z, y, x), for --dim 2 slices as for --dim 3 patches")
    return {
        "id": case.case_id,
        "image": image.array.astype(np.float32)[None],
        "label": None if label is None else label.array.astype(np.int64)[None],
        "spacing": tuple(image.spacing),
    }


def load_cases(root: str | os.PathLike, split: str = "train", num_classes: int | None = None,
               label_map: str | dict[int, str] | None = None) -> list[dict]:
    """``[{"id", "image" (1, z, y, x) float32, "label" (1, z, y, x) int64 or None, "spacing" (z, y, x)}]``.

    Every case is read and checked by :func:`segbalance.preprocessing.pairing.load_case` (label on the
    image's grid and geometry, integer values, below ``num_classes`` when given); one image channel and a
    3D volume are required. All problems are collected and raised together. ``label_map``
    (``"1=GTV,2=Lung_L"`` or ``{1: "GTV", 2: "Lung_L"}``) names the segments/ROIs of DICOM-SEG and RTSTRUCT
    labels (:mod:`segbalance.io.dicom_labels`).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` holds no case of the requested ``split`` (``"train"``: labelled, ``"all"``), or
            some cases cannot be used (one line listing each with its file).
    """
    from segbalance.preprocessing.pairing import find_cases

    if split not in ("train", "all"):
        raise ValueError(f"split must be 'train' or 'all', got {split!r}")
    cases = [c for c in find_cases(root) if split == "all" or c.split == split]
    if not cases:
        what = "labelled case (an image in images/ with a label of the same name in labels/)"
        raise UserError(f"data {root}: no {what if split == 'train' else 'case'} found")
    if label_map:
        from segbalance.io.dicom_common import parse_name_map

        lmap = parse_name_map(label_map)
        for case in cases:
            case.extra["label_map"] = lmap
    out, problems = [], []
    for case in cases:
        try:
            out.append(_load_one(case, num_classes))
        except (ValueError, OSError) as exc:
            problems.append(" ".join(str(exc).split()))
    if problems:
        raise UserError(
            f"data {root}: {len(problems)} of {len(cases)} cases cannot be used for training: "
            + "; ".join(problems)
        )
    return out


def is_ct(images: Sequence[np.ndarray]) -> bool:
    """CT-like intensities (air below -500 HU somewhere)."""
    return min(float(np.min(a)) for a in images) < -500.0


def resolve_window(ct: bool, window: str | Window | None = None) -> Window | None:
    """The intensity window to train with: ``window`` parsed by
    :func:`~segbalance.preprocessing.slices.parse_window` (a preset such as ``ct-abdomen``, ``CENTER,WIDTH``
    or ``pLOW,HIGH``), ``None`` for z-score (``"zscore"``); by default ``ct-abdomen`` for CT, z-score else."""
    if isinstance(window, Window):
        return window
    if window is None:
        return parse_window(DEFAULT_CT_WINDOW) if ct else None
    if window == ZSCORE:
        return None
    return parse_window(window)


def intensity_transform(ct: bool, window: str | Window | None = None):
    """MONAI intensity normalisation of the ``image`` key (see :func:`resolve_window`).

    A ``CENTER,WIDTH`` window maps ``[center - width/2, center + width/2]`` to [0, 1] with clipping
    (``ScaleIntensityRanged``), a percentile window does the same per image between its percentiles
    (``ScaleIntensityRangePercentilesd``); both equal
    :func:`segbalance.preprocessing.slices.window_intensities`.
    """
    from monai.transforms import NormalizeIntensityd, ScaleIntensityRanged, ScaleIntensityRangePercentilesd

    win = resolve_window(ct, window)
    if win is None:
        return NormalizeIntensityd(keys="image", nonzero=False)
    if win.percentiles is not None:
        lower, upper = win.percentiles
        return ScaleIntensityRangePercentilesd(
            keys="image", lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True
        )
    a_min, a_max = win.bounds(np.zeros(1))
    return ScaleIntensityRanged(keys="image", a_min=a_min, a_max=a_max, b_min=0.0, b_max=1.0, clip=True)


def _slices(cases: list[dict], foreground_only: bool) -> list[dict]:
    items = []
    for c in cases:
        for k in range(c["image"].shape[1]):
            lab = c["label"][:, k]
            if foreground_only and not lab.any():
                continue
            items.append({"image": c["image"][:, k], "label": lab})
    return items


def build_train_dataset(
    cases: list[dict],
    dim: int,
    size: Sequence[int],
    ct: bool,
    samples_per_volume: int = 4,
    foreground_slices: bool = True,
    window: str | Window | None = None,
    instance_maps=None,
):
    """A MONAI ``Dataset`` of ``{"image", "label"}`` dicts: resized 2D slices or random 3D patches.

    2D: every axial slice (only those with foreground when ``foreground_slices``) resized to ``size``.
    3D: ``samples_per_volume`` patches of ``size`` per volume and epoch, :data:`FG_SHARE` of them centred
    on a foreground class (``VolumeToPatchesd``); volumes smaller than the patch are padded with 0 after
    normalisation (``SpatialPadd``). Wrap it in :class:`EpochSeededDataset` for reproducible draws.
    ``instance_maps``: a transform run last on every sample (``InstanceMapsd`` for the instance losses,
    which adds ``"instances"``).
    """
    from monai.data import Dataset
    from monai.transforms import Compose, EnsureTyped, Resized, SpatialPadd

    from segbalance.preprocessing.transforms import VolumeToPatchesd

    keys = ["image", "label"]
    if dim == 2:
        items = _slices(cases, foreground_slices) or _slices(cases, False)
        transform = Compose(
            [
                intensity_transform(ct, window),
                Resized(keys=keys, spatial_size=tuple(size), mode=("bilinear", "nearest")),
                EnsureTyped(keys=keys, track_meta=False),
                *([instance_maps] if instance_maps is not None else []),
            ]
        )
        return Dataset(items, transform)
    if dim != 3:
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    items = [{"image": c["image"], "label": c["label"]} for c in cases]
    transform = Compose(
        [
            intensity_transform(ct, window),
            EnsureTyped(keys=keys, track_meta=False),
            SpatialPadd(keys=keys, spatial_size=tuple(size)),
            VolumeToPatchesd(
                keys=keys,
                patch_size=tuple(size),
                num_samples=samples_per_volume,
                fg_share=FG_SHARE,
                label_key="label",
            ),
            EnsureTyped(keys=keys, track_meta=False),
            *([instance_maps] if instance_maps is not None else []),
        ]
    )
    return Dataset(items, transform)


def derived_seed(*values: int) -> int:
    """A 32-bit seed that is a fixed function of ``values`` (e.g. ``seed, epoch, index``)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


class EpochSeededDataset(torch.utils.data.Dataset):
    """``dataset[index]`` with every MONAI random transform reseeded from ``(seed, epoch, index)``.

    Call :meth:`set_epoch` before iterating an epoch (DataLoader workers copy the dataset when the epoch's
    iterator starts, so they see the epoch too). The samples of an epoch then do not depend on the order
    of the items, on the number of workers, or on what ran before: a resumed run draws what an
    uninterrupted one draws.
    """

    def __init__(self, dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        from monai.data.utils import set_rnd

        set_rnd(self.dataset.transform, derived_seed(self.seed, self.epoch, index))
        return self.dataset[index]


def synthetic_root(out_dir: Path, n_cases: int, seed: int, shape: Sequence[int]) -> Path:
    """Write ``n_cases`` phantoms under ``out_dir/synthetic`` (kept when present) and return that folder."""
    from segbalance.synthetic import write_phantom_dataset

    root = Path(out_dir) / "synthetic"
    write_phantom_dataset(root, n_cases, format="nifti", seed=seed, shape=tuple(shape))
    return root
