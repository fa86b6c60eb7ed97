"""Volumes -> 2D slices, the Dual Focal Loss protocol (paper 000, data section): every slice along one
axis, intensity-windowed to ``[0, 1]``, resized to a fixed size (e.g. 224x224); labels resized with
nearest neighbour. Written as PNG (8- or 16-bit) or NPZ (float32), with a manifest of every slice.

Slices are taken in the array frame ``(z, y, x)`` of :class:`~segbalance.io.volumes.Volume`
(``axial`` = axis 0, ``coronal`` = 1, ``sagittal`` = 2), without reorienting to a patient frame.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from segbalance.io.volume import Volume
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

__all__ = ["Window", "parse_window", "window_intensities", "resize_slice", "volume_to_slices",
           "convert_to_slices", "AXES"]

AXES = {"axial": 0, "z": 0, "0": 0, "coronal": 1, "y": 1, "1": 1, "sagittal": 2, "x": 2, "2": 2}
SLICE_FORMATS = ("png8", "png16", "npz")


@dataclass(frozen=True)
class Window:
    """Intensity window: CT ``center``/``width`` (HU) or a per-volume percentile clip (MRI)."""

    center: float | None = None
    width: float | None = None
    percentiles: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.percentiles is None and (self.center is None or self.width is None):
            raise ValueError("window needs center and width, or percentiles")
        if self.width is not None and self.width <= 0:
            raise ValueError(f"window width must be positive, got {self.width}")
        if self.percentiles is not None:
            lo, hi = self.percentiles
            if not 0 <= lo < hi <= 100:
                raise ValueError(
                    f"window percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}"
                )

    def bounds(self, array: np.ndarray) -> tuple[float, float]:
        if self.percentiles is not None:
            lo, hi = np.percentile(array, self.percentiles)
            return float(lo), float(hi) if hi > lo else float(lo) + 1.0
        return self.center - self.width / 2, self.center + self.width / 2


def parse_window(text: str) -> Window:
    """``"40,400"`` (center,width HU), ``"ct-abdomen"``/``"ct-lung"``/``"ct-brain"`` or ``"p0.5,99.5"``."""
    presets = {"ct-abdomen": Window(40, 400), "ct-lung": Window(-600, 1500), "ct-brain": Window(40, 80),
               "ct-bone": Window(400, 1800), "mri": Window(percentiles=(0.5, 99.5))}
    if text in presets:
        return presets[text]
    try:
        if text.startswith("p"):
            lo, hi = (float(v) for v in text[1:].split(","))
            return Window(percentiles=(lo, hi))
        center, width = (float(v) for v in text.split(","))
        return Window(center, width)
    except ValueError:
        raise ValueError(f"window {text!r}: expected CENTER,WIDTH (e.g. 40,400), pLOW,HIGH (e.g. p0.5,99.5) "
                         f"or one of {sorted(presets)}") from None


def window_intensities(array: np.ndarray, window: Window) -> np.ndarray:
    """Clip to the window and scale to ``[0, 1]`` (float32)."""
    lo, hi = window.bounds(array)
    out = (np.asarray(array, dtype=np.float32) - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def resize_slice(image: np.ndarray, size: tuple[int, int] | None, *, label: bool = False) -> np.ndarray:
    """Resize a 2D slice to ``size = (rows, cols)``: bilinear (antialiased when shrinking) for images,
    nearest neighbour for labels. ``None`` keeps the size."""
    if size is None or tuple(image.shape) == tuple(size):
        return image
    rows, cols = size
    if label:
        out = Image.fromarray(image.astype(np.int32), mode="I").resize((cols, rows), Image.Resampling.NEAREST)
        return np.asarray(out).astype(image.dtype)
    out = Image.fromarray(image.astype(np.float32), mode="F").resize((cols, rows), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.float32)


def volume_to_slices(image: np.ndarray, label: np.ndarray | None, axis: int = 0,
                     size: tuple[int, int] | None = (224, 224), window: Window | None = None,
                     foreground_only: bool = False):
    """Yield ``(index, image_slice in [0,1] float32, label_slice or None)`` along ``axis``."""
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    scaled = window_intensities(image, window) if window is not None else np.asarray(image, np.float32)
    for index in range(image.shape[axis]):
        lab = None if label is None else np.take(label, index, axis=axis)
        if foreground_only and (lab is None or not lab.any()):
            continue
        img = resize_slice(np.take(scaled, index, axis=axis), size)
        yield index, img, None if lab is None else resize_slice(lab, size, label=True)


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def convert_case_to_slices(case: Case, out: CaseOutputs, axis: int, size: tuple[int, int] | None,
                           window: Window, fmt: str, foreground_only: bool, n_classes: int | None) -> dict:
    """Write one case's slices through ``out``; returns its manifest rows."""
    images, label = load_case(case)
    if len(images) != 1:
        raise CaseError(f"{case.images[0]}: slices export takes one channel, case has {len(images)}")
    volume: Volume = images[0]
    if volume.array.ndim != 3:
        raise CaseError(f"{case.images[0]}: 2D image of shape {volume.shape}; slices need a 3D volume")
    lab = None if label is None else label.array
    if lab is not None and lab.max() > 255 and fmt != "npz":
        raise ValueError(f"{case.label}: label value {lab.max()} does not fit an 8-bit PNG; use --format npz")
    in_plane = [s for a, s in enumerate(volume.spacing) if a != axis]
    plane_shape = [n for a, n in enumerate(volume.shape) if a != axis]
    out_shape = tuple(size) if size else tuple(plane_shape)
    out_spacing = [sp * n / m for sp, n, m in zip(in_plane, plane_shape, out_shape)]
    k = n_classes or (int(lab.max()) + 1 if lab is not None else 0)
    rows = []
    for index, img, lab_slice in volume_to_slices(volume.array, lab, axis, size, window, foreground_only):
        stem = f"{case.case_id}_{index:04d}"
        if fmt == "npz":
            rel_img = f"slices/{stem}.npz"
            arrays = {"image": img, "spacing": np.asarray(out_spacing, np.float32)}
            if lab_slice is not None:
                arrays["label"] = lab_slice.astype(np.uint8 if lab_slice.max() < 256 else np.uint16)
            out.save_npz(rel_img, compress=True, **arrays)
            rel_lab = rel_img if lab_slice is not None else ""
        else:
            pix = (np.round(img * 255).astype(np.uint8) if fmt == "png8"
                   else np.round(img * 65535).astype(np.uint16))
            rel_img = f"images/{stem}.png"
            out.write_bytes(rel_img, _png_bytes(pix))
            rel_lab = ""
            if lab_slice is not None:
                rel_lab = f"labels/{stem}.png"
                out.write_bytes(rel_lab, _png_bytes(lab_slice.astype(np.uint8)))
        row = {"case": case.case_id, "slice_index": index, "axis": axis, "image": rel_img, "label": rel_lab,
               "spacing_row": out_spacing[0], "spacing_col": out_spacing[1],
               "source_spacing": "x".join(f"{s:g}" for s in volume.spacing)}
        if lab_slice is not None:
            counts = np.bincount(lab_slice.ravel().astype(np.int64), minlength=k)
            row.update({f"count_{c}": int(n) for c, n in enumerate(counts)})
        rows.append(row)
    return {"rows": rows}


def convert_to_slices(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    axis: int | str = "axial",
    size: tuple[int, int] | None = (224, 224),
    window: Window | str = "ct-abdomen",
    fmt: str = "png8",
    foreground_only: bool = False,
    n_classes: int | None = None,
    jobs: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    label_map: dict[int, str] | None = None,
) -> ConversionReport:
    """Export every case under ``src`` as 2D slices into ``dst`` with ``manifest.csv``/``.json``.

    Args:
        axis: ``axial``/``coronal``/``sagittal`` or 0/1/2 (array axis of ``(z, y, x)``).
        size: output ``(rows, cols)``; ``None`` keeps the native size.
        window: :class:`Window` or text for :func:`parse_window`.
        fmt: ``png8``, ``png16`` (images ``images/<case>_<idx>.png``, labels ``labels/...``) or ``npz``
            (``slices/<case>_<idx>.npz`` with ``image`` float32 in [0,1], ``label``, ``spacing``).
        foreground_only: keep only slices whose label has a non-zero voxel.
        n_classes: number of ``count_<k>`` columns (default: up to the largest label value of each case).
        label_map: ``{value: name}`` naming the segments/ROIs of DICOM-SEG/RTSTRUCT labels.
    """
    axis_i = AXES.get(str(axis).lower())
    if axis_i is None:
        raise ValueError(f"axis {axis!r}: expected one of axial, coronal, sagittal, 0, 1, 2")
    if fmt not in SLICE_FORMATS:
        raise ValueError(f"fmt must be one of {SLICE_FORMATS}, got {fmt!r}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be two positive integers, got {size}")
    win = parse_window(window) if isinstance(window, str) else window
    cases = find_source_cases(src, label_map)
    require_3d_images(cases, "slices")
    with NewFolders(dst) as made:
        prepare_destination(dst, [src])
        config = {"converter": "slices", "axis": axis_i, "size": size, "window": win.__dict__, "format": fmt,
                  "foreground_only": foreground_only, "n_classes": n_classes,
                  **({"label_map": label_map} if label_map else {})}
        with OutputFolder(dst, config, overwrite=overwrite, source=src) as out:
            report = run_cases(cases, convert_case_to_slices, out, jobs=jobs, desc="slices",
                               progress=progress, axis=axis_i, size=size, window=win, fmt=fmt,
                               foreground_only=foreground_only, n_classes=n_classes)
            write_manifest(out, report.rows())
        made.keep = bool(report.done)
    return report
