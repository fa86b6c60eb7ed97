"""The :class:`Volume` type: a voxel array with its geometry (spacing, origin, direction).

Its own module so that every reader and writer (``io``, ``dicom``, the DICOM label readers, ``synthetic``)
can build volumes without importing each other. SimpleITK is imported only by :meth:`Volume.to_sitk` and
:meth:`Volume.from_sitk`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = ["Volume"]


@dataclass
class Volume:
    """A 3D (or 2D) image with geometry.

    Attributes:
        array: voxels in SimpleITK numpy order ``(z, y, x)``.
        spacing: voxel size in mm in the same order as ``array`` axes ``(z, y, x)``.
        origin: physical position (mm, ITK LPS) of the first voxel, ``(x, y, z)``.
        direction: row-major ``ndim x ndim`` direction cosines (ITK convention, columns = axes i, j, k).
        path: the file or folder the volume was read from, if any.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...] = field(default=())
    direction: tuple[float, ...] = field(default=())
    path: Path | None = None

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        nd = self.array.ndim
        if nd not in (2, 3):
            raise ValueError(f"Volume array must be 2D or 3D, got shape {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) != nd:
            raise ValueError(f"spacing {self.spacing} must have one entry per array axis ({nd})")
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise ValueError(f"spacing must be positive and finite, got {self.spacing}")
        self.origin = tuple(float(o) for o in self.origin) if len(self.origin) else (0.0,) * nd
        self.direction = (
            tuple(float(d) for d in np.asarray(self.direction).ravel())
            if len(self.direction)
            else tuple(np.eye(nd).ravel().tolist())
        )
        if len(self.origin) != nd or len(self.direction) != nd * nd:
            raise ValueError(
                f"origin {self.origin} / direction {self.direction} do not match a {nd}D array"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def direction_matrix(self) -> np.ndarray:
        nd = self.array.ndim
        return np.asarray(self.direction, dtype=np.float64).reshape(nd, nd)

    def to_sitk(self) -> sitk.Image:
        """SimpleITK image with the same voxels and geometry (ITK spacing is ``(x, y, z)``)."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        image.SetSpacing(tuple(reversed(self.spacing)))
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, path: str | os.PathLike | None = None) -> Volume:
        """The voxels and geometry of a SimpleITK image (scalar pixels only)."""
        import SimpleITK as sitk

        if image.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(
                f"{path or 'image'}: {image.GetNumberOfComponentsPerPixel()}-component (vector/RGB) pixels "
                "are not supported; expected a scalar volume"
            )
        return cls(
            array=sitk.GetArrayFromImage(image),
            spacing=tuple(reversed(image.GetSpacing())),
            origin=image.GetOrigin(),
            direction=image.GetDirection(),
            path=Path(path) if path is not None else None,
        )

    def with_array(self, array: np.ndarray) -> Volume:
        """Same geometry, new voxels (must have the same shape)."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} differs from the volume's {self.array.shape}")
        return Volume(array, self.spacing, self.origin, self.direction, self.path)
