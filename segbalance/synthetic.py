"""CT- and MRI-like phantoms with known labels, for tests, the demo and the benchmarks.

A phantom is a body (an ellipsoid filling most of the field of view), a large organ inside it (an
ellipsoid deformed by a smooth random displacement field) and a small lesion (a deformed sphere at the
organ's border, about 0.05-0.6 % of the voxels by default). Labels: 0 background, 1 organ, 2 lesion.
With ``n_lesions > 1`` (or ``lesion_radii_mm``) there are several separate lesions of a spread of sizes,
down to a few voxels across, for lesion-level (detection) evaluation; ``meta["n_lesions"]`` is their count.

CT intensities are HU-like: air -1000, soft tissue ~40, organ ~60, lesion ~100 (hyperdense) or ~20
(hypodense), with Gaussian noise. MRI intensities are arbitrary units with a smooth multiplicative bias
field and Rician noise. Everything is deterministic per ``seed``.

>>> p = make_phantom(shape=(16, 32, 32), spacing=(2.5, 0.8, 0.8), seed=0)
>>> p.image.shape, p.label.dtype.name, sorted(set(p.label.ravel().tolist()))
((16, 32, 32), 'uint8', [0, 1, 2])
>>> bool(0 < (p.label == 2).mean() < 0.01)
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = ["Phantom", "make_phantom", "write_phantom", "write_phantom_dataset", "FORMATS"]

FORMATS = ("nifti", "mhd", "dicom")
_EXT = {"nifti": ".nii.gz", "mhd": ".mhd"}


@dataclass
class Phantom:
    """One synthetic case. Arrays in SimpleITK's numpy order (z, y, x); ``spacing`` in the same order (mm);
    ``origin`` and ``direction`` in ITK's physical (x, y, z) convention (direction row-major 3x3)."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    modality: str = "ct"
    meta: dict = field(default_factory=dict)

    def image_volume(self):
        from segbalance.io.volume import Volume

        return Volume(self.image, self.spacing, self.origin, self.direction)

    def label_volume(self):
        from segbalance.io.volume import Volume

        return Volume(self.label, self.spacing, self.origin, self.direction)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 4) -> np.ndarray:
    """A smooth random field in [-1, 1]-ish: coarse Gaussian noise upsampled with cubic splines."""
    grid = rng.standard_normal((coarse,) * len(shape))
    factors = [s / coarse for s in shape]
    out = ndimage.zoom(grid, factors, order=3, mode="nearest")
    return out[tuple(slice(0, s) for s in shape)]


def _mm_grid(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> list[np.ndarray]:
    """Coordinates in mm relative to the volume centre, (z, y, x) order, broadcastable."""
    axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)]
    return np.meshgrid(*axes, indexing="ij", sparse=True)


def _check_args(shape, spacing, modality, lesion_fraction, n_lesions=1, lesion_radii_mm=None) -> None:
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be 3 sizes >= 8 (z, y, x), got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive numbers (z, y, x) in mm, got {spacing}")
    if modality not in ("ct", "mri"):
        raise ValueError(f"modality must be 'ct' or 'mri', got {modality!r}")
    lo, hi = lesion_fraction
    if not 0 < lo <= hi < 0.01:
        raise ValueError(f"lesion_fraction must be (lo, hi) with 0 < lo <= hi < 0.01, got {lesion_fraction}")
    if int(n_lesions) < 1:
        raise ValueError(f"n_lesions must be >= 1, got {n_lesions}")
    if lesion_radii_mm is not None:
        radii = np.asarray(lesion_radii_mm, float).ravel()
        if radii.size not in (2, int(n_lesions)) or not np.all(radii > 0):
            raise ValueError(f"lesion_radii_mm must be positive: (lo, hi) or one radius per lesion "
                             f"({n_lesions}), got {lesion_radii_mm}")


def make_phantom(
    shape: tuple[int, int, int] = (48, 64, 64),
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.8),
    seed: int = 0,
    modality: str = "ct",
    lesion_fraction: tuple[float, float] = (0.0005, 0.004),
    noise: float | None = None,
    n_lesions: int = 1,
    lesion_radii_mm: tuple[float, ...] | None = None,
) -> Phantom:
    """A deterministic CT- or MRI-like phantom (see the module docstring).

    Args:
        shape: (z, y, x) voxels.
        spacing: (z, y, x) voxel size in mm (anisotropic by default, like thick-slice CT).
        seed: the phantom is a pure function of ``seed`` and the other arguments.
        modality: ``"ct"`` (HU-like) or ``"mri"`` (arbitrary units, bias field).
        lesion_fraction: (lo, hi) range of the lesion's share of all voxels; the target is drawn uniformly.
        noise: noise standard deviation (default 12 HU for CT, 25 a.u. for MRI).
        n_lesions: number of lesions. 1 with ``lesion_radii_mm=None`` is the single border lesion sized by
            ``lesion_fraction``; otherwise separate spheres (slightly deformed) inside the organ, more than
            two voxels apart, sized by ``lesion_radii_mm`` (``lesion_fraction`` is then not used).
        lesion_radii_mm: one radius per lesion in mm, or ``(lo, hi)`` to draw each radius log-uniformly
            (with ``n_lesions == 2`` two values are the two radii); default
            ``(max(spacing), smallest organ semi-axis / 3)``: from about two voxels across to large lesions.

    ``meta["n_lesions"]`` is the number of lesions present (26-connected components of label 2); fewer
    than ``n_lesions`` when they do not all fit in the organ apart from each other.

    Raises:
        ValueError: bad ``shape``, ``spacing``, ``modality``, ``lesion_fraction``, ``n_lesions`` or
            ``lesion_radii_mm``.
    """
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    _check_args(shape, spacing, modality, lesion_fraction, n_lesions, lesion_radii_mm)
    rng = np.random.default_rng(seed)
    z, y, x = _mm_grid(shape, spacing)
    extent = np.array([n * s / 2.0 for n, s in zip(shape, spacing)])  # half field of view, mm

    # body: an axis-aligned ellipsoid filling ~85-95 % of the field of view
    body_r = extent * rng.uniform(0.85, 0.95, 3)
    body_r[0] = extent[0] * 1.5  # the body continues beyond the first and last slices
    body = (z / body_r[0]) ** 2 + (y / body_r[1]) ** 2 + (x / body_r[2]) ** 2 <= 1.0

    # organ: an off-centre ellipsoid deformed by a smooth random displacement of the coordinates
    centre = extent * rng.uniform(-0.15, 0.15, 3)
    centre[0] = extent[0] * rng.uniform(-0.1, 0.1)
    organ_r = extent * rng.uniform(0.4, 0.55, 3)
    organ_r[0] = extent[0] * rng.uniform(0.6, 0.8)
    amplitude = 0.12 * organ_r.min()
    dz, dy, dx = (amplitude * _smooth_field(rng, shape) for _ in range(3))
    zc, yc, xc = z - centre[0] + dz, y - centre[1] + dy, x - centre[2] + dx
    organ_dist = np.sqrt((zc / organ_r[0]) ** 2 + (yc / organ_r[1]) ** 2 + (xc / organ_r[2]) ** 2)
    organ = (organ_dist <= 1.0) & body

    if int(n_lesions) > 1 or lesion_radii_mm is not None:
        lesion = _several_lesions(rng, shape, spacing, (z, y, x), body, centre, organ_r, int(n_lesions),
                                  lesion_radii_mm)
    else:
        # lesion: a slightly deformed sphere near the organ border (inside or straddling it)
        n_voxels = int(np.prod(shape))
        target = rng.uniform(*lesion_fraction) * n_voxels
        voxel_mm3 = float(np.prod(spacing))
        radius = (3.0 * target * voxel_mm3 / (4.0 * np.pi)) ** (1.0 / 3.0)
        radius = max(radius, 1.05 * max(spacing) / 2.0)  # at least one voxel across in every direction
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        depth = rng.uniform(0.55, 0.9)  # fraction of the organ radius: inside, close to the border
        lesion_centre = centre + depth * organ_r * direction
        wobble = 0.15 * radius * _smooth_field(rng, shape, coarse=3)
        lesion_dist = (
            np.sqrt((z - lesion_centre[0]) ** 2 + (y - lesion_centre[1]) ** 2 + (x - lesion_centre[2]) ** 2)
            + wobble
        )
        lesion = (lesion_dist <= radius) & body
        if not lesion.any():  # tiny volumes: put at least the nearest voxel in
            idx = np.unravel_index(np.argmin(np.where(body, lesion_dist, np.inf)), shape)
            lesion[idx] = True
        cap = max(1, int(min(1.5 * target, 0.0099 * n_voxels)))
        if lesion.sum() > cap:  # stay near the target, never reach 1 %: keep the voxels closest to the centre
            order = np.argsort(np.where(lesion, lesion_dist, np.inf), axis=None)[:cap]
            lesion = np.zeros(shape, bool)
            lesion.flat[order] = True
    n_found = int(ndimage.label(lesion, structure=np.ones((3, 3, 3)))[1])  # 26-connected lesions

    label = np.zeros(shape, np.uint8)
    label[organ] = 1
    label[lesion] = 2

    texture = _smooth_field(rng, shape, coarse=8)
    if modality == "ct":
        sd = 12.0 if noise is None else float(noise)
        lesion_hu = 100.0 if rng.uniform() < 0.7 else 20.0
        image = np.full(shape, -1000.0)
        image[body] = 40.0
        image[organ] = 60.0
        image[lesion] = lesion_hu
        image = image + 5.0 * texture * body
        image = ndimage.gaussian_filter(image, sigma=0.5 / np.asarray(spacing) * min(spacing))  # PSF blur
        image = image + rng.normal(0.0, sd, shape)
        meta = {"lesion_hu": lesion_hu}
    else:
        sd = 25.0 if noise is None else float(noise)
        image = np.zeros(shape)
        image[body] = 300.0
        image[organ] = 500.0
        image[lesion] = 800.0
        image = image * (1.0 + 0.05 * texture)
        bias = np.exp(0.25 * _smooth_field(rng, shape, coarse=3))
        image = ndimage.gaussian_filter(image * bias, sigma=0.5)
        image = np.hypot(image + rng.normal(0.0, sd, shape), rng.normal(0.0, sd, shape))  # Rician
        meta = {}
    meta.update(lesion_fraction=float(lesion.mean()), seed=seed, n_lesions=n_found)
    origin = tuple(float(v) for v in -(np.array(shape[::-1]) - 1) / 2.0 * np.array(spacing[::-1]))
    return Phantom(image.astype(np.float32), label, spacing, origin, modality=modality, meta=meta)


def _several_lesions(rng, shape, spacing, grid, body, centre, organ_r, n, radii_mm) -> np.ndarray:
    """``n`` separate, slightly deformed spheres inside the organ (rejection sampling of the centres)."""
    z, y, x = grid
    vox = max(spacing)
    if radii_mm is None:
        radii_mm = (vox, max(1.5 * vox, float(organ_r.min()) / 3.0))
    r = np.asarray(radii_mm, float).ravel()
    radii = r if r.size == n else np.exp(rng.uniform(np.log(r.min()), np.log(r.max()), n))
    lesion = np.zeros(shape, bool)
    placed: list[tuple[np.ndarray, float]] = []
    for rad in sorted(radii, reverse=True):  # the large ones first: they are the hardest to fit
        for _ in range(200):
            direction = rng.standard_normal(3)
            direction /= np.linalg.norm(direction)
            c = centre + 0.9 * rng.uniform() ** (1 / 3) * np.maximum(organ_r - rad, 0.0) * direction
            if all(np.linalg.norm(c - c2) > 1.1 * (rad + r2) + 2.0 * vox for c2, r2 in placed):
                break
        else:
            continue  # no room left for this one
        placed.append((c, rad))
        d = np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
        sphere = (d <= rad * rng.uniform(0.92, 1.08)) & body
        if not sphere.any():  # a radius under half a voxel: keep the nearest voxel
            sphere.flat[np.argmin(np.where(body, d, np.inf))] = True
        lesion |= sphere
    return lesion


def write_phantom(
    phantom: Phantom,
    image_path: str | os.PathLike,
    label_path: str | os.PathLike | None,
    format: str = "nifti",
) -> tuple[Path, Path | None]:
    """Write one phantom: the image as NIfTI/MHD file or a DICOM series folder, the label as NIfTI/MHD.

    For ``format="dicom"`` ``image_path`` is a folder of int16 slices (``HU = stored + (-1024)`` for CT; MRI
    values rescaled with a slope so they fit int16) and the label is written as NIfTI.
    """
    import SimpleITK as sitk

    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    image_path = Path(image_path)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    if format == "dicom":
        from segbalance.io.dicom import write_dicom_series

        if phantom.modality == "ct":
            slope, intercept, modality = 1.0, -1024.0, "CT"
        else:
            slope, intercept, modality = max(float(phantom.image.max()) / 30000.0, 1e-3), 0.0, "MR"
        write_dicom_series(
            phantom.image_volume(),
            image_path,
            rescale_slope=slope,
            rescale_intercept=intercept,
            modality=modality,
        )
    else:
        sitk.WriteImage(phantom.image_volume().to_sitk(), str(image_path), useCompression=True)
    if label_path is not None:
        label_path = Path(label_path)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(phantom.label_volume().to_sitk(), str(label_path), useCompression=True)
    return image_path, (Path(label_path) if label_path is not None else None)


def write_phantom_dataset(
    root: str | os.PathLike,
    n_cases: int,
    format: str = "nifti",
    seed: int = 0,
    shape: tuple[int, int, int] = (48, 64, 64),
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.8),
    modality: str = "ct",
    overwrite: bool = False,
    **phantom_kwargs,
) -> list[str]:
    """Write ``n_cases`` phantoms as ``root/images/case_000<ext>`` and ``root/labels/case_000<ext>``.

    Case ``i`` uses seed ``seed + i``. DICOM images are series folders ``root/images/case_000/`` with
    NIfTI labels. Existing cases are kept (the run can be resumed) unless ``overwrite``. Returns case ids.

    Raises:
        ValueError: ``n_cases`` < 1 or unknown ``format``.
    """
    if int(n_cases) < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    root = Path(root)
    label_ext = ".nii.gz" if format == "dicom" else _EXT[format]
    ids = []
    for i in range(int(n_cases)):
        cid = f"case_{i:03d}"
        ids.append(cid)
        image_path = root / "images" / (cid if format == "dicom" else cid + _EXT[format])
        label_path = root / "labels" / (cid + label_ext)
        if not overwrite and image_path.exists() and label_path.exists():
            continue
        phantom = make_phantom(
            shape=shape, spacing=spacing, seed=seed + i, modality=modality, **phantom_kwargs
        )
        write_phantom(phantom, image_path, label_path, format=format)
    return ids
