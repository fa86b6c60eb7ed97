"""Training data for the MONAI pipeline: cases from an images/ + labels/ folder, 2D slices or 3D patches.

Volumes are read once with :func:`segbalance.preprocessing.io.read_volume` (any format, DICOM series too),
kept in memory as channel-first float32/int arrays in (z, y, x) order, and fed through MONAI transforms:
``ScaleIntensityRanged`` (CT window) or ``NormalizeIntensityd`` (MRI), then ``Resized`` to a square slice
(2D, the Dual Focal protocol: axial slices resized to e.g. 128² or 224²) or ``RandCropByPosNegLabeld``
(3D patches, half of them centred on foreground).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["load_cases", "intensity_transform", "build_train_dataset", "CT_WINDOW"]

CT_WINDOW = (-200.0, 300.0)  # HU window mapped to [0, 1]


def load_cases(root: str | os.PathLike, split: str = "train") -> list[dict]:
    """``[{"id", "image" (1, z, y, x) float32, "label" (1, z, y, x) int64 or None, "spacing" (z, y, x)}]``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` holds no case of the requested ``split`` (``"train"``: labelled, ``"all"``).
    """
    from segbalance.preprocessing.io import read_volume
    from segbalance.preprocessing.pairing import find_cases

    cases = [c for c in find_cases(root) if split == "all" or c.split == split]
    if not cases:
        raise ValueError(f"data {root}: no {split} case found (expected images/ + labels/ sub-folders)")
    out = []
    for case in cases:
        image = read_volume(case.images[0])
        label = read_volume(case.label).array.astype(np.int64)[None] if case.label is not None else None
        out.append(
            {
                "id": case.case_id,
                "image": image.array.astype(np.float32)[None],
                "label": label,
                "spacing": tuple(image.spacing),
            }
        )
    return out


def is_ct(images: Sequence[np.ndarray]) -> bool:
    """CT-like intensities (air below -500 HU somewhere)."""
    return min(float(np.min(a)) for a in images) < -500.0


def intensity_transform(ct: bool):
    """MONAI intensity normalisation of the ``image`` key: CT window to [0, 1], or z-score (MRI)."""
    from monai.transforms import NormalizeIntensityd, ScaleIntensityRanged

    if ct:
        return ScaleIntensityRanged(
            keys="image", a_min=CT_WINDOW[0], a_max=CT_WINDOW[1], b_min=0.0, b_max=1.0, clip=True
        )
    return NormalizeIntensityd(keys="image", nonzero=False)


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
    seed: int = 0,
):
    """A MONAI ``Dataset`` of ``{"image", "label"}`` dicts: resized 2D slices or random 3D patches.

    2D: every axial slice (only those with foreground when ``foreground_slices``) resized to ``size``.
    3D: ``samples_per_volume`` patches of ``size`` per volume per epoch, half centred on foreground.
    """
    from monai.data import Dataset
    from monai.transforms import Compose, EnsureTyped, RandCropByPosNegLabeld, Resized, SpatialPadd

    if dim == 2:
        items = _slices(cases, foreground_slices) or _slices(cases, False)
        transform = Compose(
            [
                intensity_transform(ct),
                Resized(keys=["image", "label"], spatial_size=tuple(size), mode=("bilinear", "nearest")),
                EnsureTyped(keys=["image", "label"], track_meta=False),
            ]
        )
        return Dataset(items, transform)
    if dim != 3:
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    items = [{"image": c["image"], "label": c["label"]} for c in cases]
    crop = RandCropByPosNegLabeld(
        keys=["image", "label"],
        label_key="label",
        spatial_size=tuple(size),
        pos=1,
        neg=1,
        num_samples=samples_per_volume,
        allow_smaller=True,
    )
    crop.set_random_state(seed)
    transform = Compose(
        [
            intensity_transform(ct),
            SpatialPadd(keys=["image", "label"], spatial_size=tuple(size)),
            crop,
            EnsureTyped(keys=["image", "label"], track_meta=False),
        ]
    )
    return Dataset(items, transform)


def synthetic_root(out_dir: Path, n_cases: int, seed: int, shape: Sequence[int]) -> Path:
    """Write ``n_cases`` phantoms under ``out_dir/synthetic`` (kept when present) and return that folder."""
    from segbalance.synthetic import write_phantom_dataset

    root = Path(out_dir) / "synthetic"
    write_phantom_dataset(root, n_cases, format="nifti", seed=seed, shape=tuple(shape))
    return root
