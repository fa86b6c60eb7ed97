"""Volumes -> 3D patches: a fixed grid with overlap, or random sampling with a foreground share.

Random sampling follows nnU-Net's foreground oversampling: a share ``fg_share`` of the patches is centred
on a voxel of a foreground class, the class drawn uniformly among the classes present in the case (so a
lesion of 0.01 % of the voxels is seen as often as a large organ); the rest are placed uniformly. The
random generator is seeded with ``(seed, case id)`` so results do not depend on ``-j`` or case order.
Volumes smaller than the patch are padded (image with its minimum, label with 0).
In MONAI pipelines the same sampling is ``RandCropByLabelClassesd`` and the grid ``GridPatchd``;
:class:`~segbalance.preprocessing.transforms.VolumeToPatchesd` wraps these functions for ``Compose``.
"""

from __future__ import annotations

import os
import zlib

import numpy as np

from segbalance.labels import present_labels
from segbalance.preprocessing.pairing import Case, CaseError, load_case
from segbalance.preprocessing.runs import (
    CaseOutputs,
    ConversionReport,
    NewFolders,
    OutputFolder,
    find_source_cases,
    prepare_destination,
    require_3d_images,
    run_cases,
    write_manifest,
)

__all__ = ["grid_starts", "grid_patch_starts", "random_patch_starts", "pad_to_patch", "extract_patch",
           "convert_to_patches", "case_rng"]


def grid_starts(length: int, patch: int, overlap: float) -> list[int]:
    """Start indices of patches of size ``patch`` along an axis of ``length`` with fractional ``overlap``.

    Stride ``= max(1, round(patch * (1 - overlap)))``; the last patch is flush with the end, so every voxel
    is covered. ``length <= patch`` gives ``[0]`` (the caller pads).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if length <= patch:
        return [0]
    stride = max(1, int(round(patch * (1 - overlap))))
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def grid_patch_starts(
    shape: tuple[int, ...], patch: tuple[int, ...], overlap: float
) -> list[tuple[int, ...]]:
    """All combinations of :func:`grid_starts` per axis, in C order."""
    axes = [grid_starts(n, p, overlap) for n, p in zip(shape, patch)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(shape))
    return [tuple(int(v) for v in s) for s in grid]


def case_rng(seed: int, case_id: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(case_id.encode())])


def random_patch_starts(label: np.ndarray | None, patch: tuple[int, ...], n: int, fg_share: float,
                        rng: np.random.Generator) -> list[tuple[tuple[int, ...], str]]:
    """``n`` patch starts with their kind (``"fg:<class>"`` or ``"random"``).

    ``round(n * fg_share)`` patches contain a voxel of a foreground class chosen uniformly among the
    present classes (the voxel uniformly within that class, the patch centred on it and shifted inside the
    volume); when the case has no foreground they are placed uniformly.
    """
    if not 0 <= fg_share <= 1:
        raise ValueError(f"fg_share must be in [0, 1], got {fg_share}")
    shape = label.shape if label is not None else None
    if shape is None:
        raise ValueError("random patch sampling needs a label (or a shape)")
    high = [max(0, s - p) for s, p in zip(shape, patch)]
    classes = [int(c) for c in present_labels(label) if c > 0]
    n_fg = int(round(n * fg_share)) if classes else 0
    by_class: dict[int, np.ndarray] = {}
    out = []
    for i in range(n):
        if i < n_fg:
            c = classes[int(rng.integers(len(classes)))]
            if c not in by_class:
                by_class[c] = np.flatnonzero(label.ravel() == c)
            flat = by_class[c][int(rng.integers(len(by_class[c])))]
            centre = np.unravel_index(flat, shape)
            start = tuple(int(np.clip(ci - p // 2, 0, h)) for ci, p, h in zip(centre, patch, high))
            out.append((start, f"fg:{c}"))
        else:
            out.append((tuple(int(rng.integers(h + 1)) for h in high), "random"))
    return out


def pad_to_patch(array: np.ndarray, patch: tuple[int, ...], value: float) -> np.ndarray:
    pad = [(0, max(0, p - s)) for s, p in zip(array.shape, patch)]
    if not any(b for _, b in pad):
        return array
    return np.pad(array, pad, mode="constant", constant_values=value)


def extract_patch(array: np.ndarray, start: tuple[int, ...], patch: tuple[int, ...]) -> np.ndarray:
    return array[tuple(slice(s, s + p) for s, p in zip(start, patch))]


def convert_case_to_patches(case: Case, out: CaseOutputs, patch: tuple[int, int, int], mode: str,
                            overlap: float, n_patches: int, fg_share: float, seed: int, n_classes: int | None,
                            compress: bool = False) -> dict:
    """Write one case's patches through ``out``; returns its manifest rows."""
    images, label = load_case(case)
    if images[0].array.ndim != 3:
        raise CaseError(f"{case.images[0]}: 2D image of shape {images[0].shape}; patches need a 3D volume")
    image = np.stack([v.array for v in images])  # (C, z, y, x), source dtype (HU stay int16)
    vol = images[0]
    lab = None if label is None else label.array
    if mode == "random" and lab is None:
        raise ValueError(f"{case.images[0]}: random patch sampling needs a label; this case has none")
    image = np.stack([pad_to_patch(c, patch, float(c.min())) for c in image])
    if lab is not None:
        lab = pad_to_patch(lab, patch, 0)
    if mode == "grid":
        starts = [(s, "grid") for s in grid_patch_starts(image.shape[1:], patch, overlap)]
    else:
        starts = random_patch_starts(lab, patch, n_patches, fg_share, case_rng(seed, case.case_id))
    k = n_classes or (int(lab.max()) + 1 if lab is not None else 0)
    rows = []
    for i, (start, kind) in enumerate(starts):
        rel = f"patches/{case.case_id}_{i:05d}.npz"
        arrays = {"image": extract_patch(image, (0, *start), (image.shape[0], *patch)),
                  "start": np.asarray(start, np.int64), "spacing": np.asarray(vol.spacing, np.float32)}
        row = {"case": case.case_id, "patch_index": i, "file": rel, "kind": kind,
               "start_z": start[0], "start_y": start[1], "start_x": start[2],
               "size": "x".join(map(str, patch)), "spacing": "x".join(f"{s:g}" for s in vol.spacing)}
        if lab is not None:
            lp = extract_patch(lab, start, patch)
            arrays["label"] = lp.astype(np.uint8 if lab.max() < 256 else np.uint16)
            counts = np.bincount(lp.ravel().astype(np.int64), minlength=k)
            row.update({f"count_{c}": int(n) for c, n in enumerate(counts)})
        out.save_npz(rel, compress=compress, **arrays)
        rows.append(row)
    return {"rows": rows}


def convert_to_patches(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    patch_size: tuple[int, int, int] = (64, 64, 64),
    mode: str = "random",
    overlap: float = 0.0,
    n_patches: int = 16,
    fg_share: float = 0.5,
    seed: int = 0,
    n_classes: int | None = None,
    compress: bool = False,
    jobs: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    label_map: dict[int, str] | None = None,
) -> ConversionReport:
    """Export 3D patches of every case under ``src`` as ``dst/patches/<case>_<i>.npz`` + manifest.

    Each NPZ holds ``image`` ``(C, pz, py, px)`` in the source dtype and units (HU for CT), ``label``
    ``(pz, py, px)``, ``start`` (z, y, x) and ``spacing``. ``mode="grid"`` tiles the volume with ``overlap``;
    ``mode="random"`` draws ``n_patches`` per case with ``fg_share`` of them on foreground.
    NPZ files are uncompressed unless ``compress`` (zlib costs ~4x the conversion time; uncompressed
    patches also load fastest in a training loader). ``label_map`` (``{value: name}``) names the
    segments/ROIs of DICOM-SEG/RTSTRUCT labels.
    """
    if mode not in ("grid", "random"):
        raise ValueError(f"mode must be 'grid' or 'random', got {mode!r}")
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != 3 or min(patch) < 1:
        raise ValueError(f"patch_size must be three positive integers, got {patch_size}")
    if n_patches < 1:
        raise ValueError(f"n_patches must be >= 1, got {n_patches}")
    if not 0 <= fg_share <= 1:
        raise ValueError(f"fg_share must be in [0, 1], got {fg_share}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    cases = find_source_cases(src, label_map)
    require_3d_images(cases, "patches")
    with NewFolders(dst) as made:
        prepare_destination(dst, [src])
        config = {"converter": "patches", "patch_size": patch, "mode": mode, "n_classes": n_classes,
                  "compress": compress, **({"label_map": label_map} if label_map else {})}
        config.update({"overlap": overlap} if mode == "grid" else
                      {"n_patches": n_patches, "fg_share": fg_share, "seed": seed})
        with OutputFolder(dst, config, overwrite=overwrite, source=src) as out:
            report = run_cases(cases, convert_case_to_patches, out, jobs=jobs, desc="patches",
                               progress=progress, patch=patch, mode=mode, overlap=overlap,
                               n_patches=n_patches, fg_share=fg_share, seed=seed, n_classes=n_classes,
                               compress=compress)
            write_manifest(out, report.rows())
        made.keep = bool(report.done)
    return report
