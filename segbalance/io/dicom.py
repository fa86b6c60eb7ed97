"""DICOM series: choose a series, sort its slices along the slice normal, check for gaps, read in HU.

Slices are ordered by the projection of ``ImagePositionPatient`` on the slice normal
``n = row x col`` from ``ImageOrientationPatient`` (never by file name or InstanceNumber). Pixels are
read with SimpleITK (GDCM: handles compressed transfer syntaxes and applies RescaleSlope/Intercept per
slice), headers with pydicom. :func:`write_dicom_series` writes a volume as a CT series (tests, demos).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segbalance.extras import require

require("SimpleITK", "pydicom", needed_for="reading and writing DICOM series")

import pydicom  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from segbalance.io.dicom_common import check_dicom_complete  # noqa: E402
from segbalance.io.volume import Volume  # noqa: E402

__all__ = ["SliceHeader", "list_series", "read_dicom_series", "read_dicom_file", "write_dicom_series",
           "read_series_headers", "headers_geometry", "series_modality"]


@dataclass(frozen=True)
class SliceHeader:
    path: Path
    series_uid: str
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    rows: int
    columns: int
    pixel_spacing: tuple[float, float]


def _read_header(path: Path) -> SliceHeader | None:
    """Header of an image slice, or ``None`` when ``path`` is not a DICOM image (DICOMDIR, README, ...)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=False)
    except pydicom.errors.InvalidDicomError:
        return None
    except Exception as exc:  # truncated header, bad element
        raise ValueError(f"{path}: unreadable DICOM file ({type(exc).__name__}: {exc})") from None
    check_dicom_complete(path, "DICOM file")  # a cut header would otherwise read as a non-image file
    if "PixelData" not in ds and not hasattr(ds, "Rows"):
        return None
    missing = [k for k in ("SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient",
                           "Rows", "Columns") if k not in ds]
    if missing:
        raise ValueError(f"{path}: DICOM slice lacks {', '.join(missing)}; cannot place it in a series")
    spacing = tuple(float(v) for v in ds.get("PixelSpacing", [1.0, 1.0]))
    return SliceHeader(
        path=path,
        series_uid=str(ds.SeriesInstanceUID),
        position=tuple(float(v) for v in ds.ImagePositionPatient),
        orientation=tuple(float(v) for v in ds.ImageOrientationPatient),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        pixel_spacing=(spacing[0], spacing[1]),
    )


def list_series(folder: str | os.PathLike) -> dict[str, list[SliceHeader]]:
    """Image slices under ``folder`` (recursively) grouped by SeriesInstanceUID."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    series: dict[str, list[SliceHeader]] = defaultdict(list)
    for path in sorted(f for f in folder.rglob("*") if f.is_file()):
        header = _read_header(path)
        if header is not None:
            series[header.series_uid].append(header)
    return dict(series)


def _sorted_slices(
    slices: list[SliceHeader], tolerance: float
) -> tuple[list[SliceHeader], float, np.ndarray]:
    """Slices sorted along the normal, their mean spacing and the 3x3 direction (columns row, col, n)."""
    first = slices[0]
    for s in slices[1:]:
        if not np.allclose(s.orientation, first.orientation, atol=1e-4):
            raise ValueError(f"{s.path}: ImageOrientationPatient {s.orientation} differs from "
                             f"{first.path.name}'s {first.orientation}; mixed orientations in one series")
        if (s.rows, s.columns) != (first.rows, first.columns):
            raise ValueError(f"{s.path}: {s.rows}x{s.columns} pixels, {first.path.name} has "
                             f"{first.rows}x{first.columns}")
    row = np.asarray(first.orientation[:3])
    col = np.asarray(first.orientation[3:])
    normal = np.cross(row, col)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise ValueError(f"{first.path}: ImageOrientationPatient {first.orientation} is not two orthonormal "
                         "direction vectors")
    proj = np.array([np.dot(s.position, normal) for s in slices])
    order = np.argsort(proj, kind="stable")
    ordered = [slices[i] for i in order]
    proj = proj[order]
    if len(ordered) == 1:
        return ordered, 1.0, np.stack([row, col, normal], axis=1)
    steps = np.diff(proj)
    dup = np.flatnonzero(steps < 1e-4)
    if dup.size:
        i = int(dup[0])
        raise ValueError(f"{ordered[i + 1].path}: same slice position as {ordered[i].path.name} "
                         f"({proj[i]:.3f} mm along the normal); duplicate slices in series "
                         f"{first.series_uid}")
    median = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - median) > tolerance * median + 1e-3)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{ordered[i + 1].path}: gap in DICOM series {first.series_uid}: slice spacing {steps[i]:.3f} mm "
            f"after {ordered[i].path.name}, the series' usual spacing is {median:.3f} mm "
            "(missing slice or non-uniform spacing)"
        )
    return ordered, float(np.mean(steps)), np.stack([row, col, normal], axis=1)


def _series_slices(folder: Path, series_uid: str | None, spacing_tolerance: float):
    """The slices of one series in ``folder`` sorted by position, its slice spacing and direction; the
    series is ``series_uid`` or the only one (errors name the folder and list the series found)."""
    series = list_series(folder)
    if not series:
        raise ValueError(f"{folder}: no DICOM image slices found")
    if series_uid is None:
        if len(series) > 1:
            listing = "; ".join(f"{uid} ({len(s)} slices)" for uid, s in sorted(series.items()))
            raise ValueError(
                f"{folder}: holds {len(series)} DICOM series, choose one with series_uid: {listing}"
            )
        series_uid = next(iter(series))
    if series_uid not in series:
        raise ValueError(f"{folder}: no series with SeriesInstanceUID {series_uid}; found {sorted(series)}")
    return _sorted_slices(series[series_uid], spacing_tolerance)


def series_modality(path: str | os.PathLike) -> str | None:
    """The ``Modality`` (``"CT"``, ``"MR"``, ``"PT"``, ...) of the DICOM series folder or file at ``path``,
    from the first image slice's header; ``None`` for a NIfTI/MHD/NRRD file or a series without one."""
    p = Path(path)
    if p.is_file():
        files = [p] if p.suffix.lower() == ".dcm" else []
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
    else:
        files = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["Modality", "Rows"])
        except Exception:  # not DICOM or damaged: the series read reports it
            continue
        if "Rows" in ds and str(ds.get("Modality", "")).strip():
            return str(ds.Modality).strip().upper()
    return None


def read_dicom_series(
    folder: str | os.PathLike, series_uid: str | None = None, spacing_tolerance: float = 0.01
) -> Volume:
    """Read one DICOM series from ``folder`` as a volume in real units (HU for CT).

    Raises:
        ValueError: no series, several series and no ``series_uid`` (the message lists them), a gap,
            duplicate or mixed-orientation slices, or an unreadable slice (named).
    """
    folder = Path(folder)
    ordered, dz, direction = _series_slices(folder, series_uid, spacing_tolerance)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(s.path) for s in ordered])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        bad = _first_unreadable([s.path for s in ordered])
        where = f"{bad}" if bad else f"{folder}"
        detail = str(exc).strip()[-200:]
        raise ValueError(f"{where}: unreadable or truncated DICOM pixel data ({detail})") from None
    array = sitk.GetArrayFromImage(image)
    first = ordered[0]
    return Volume(
        array=array,
        spacing=(dz, first.pixel_spacing[0], first.pixel_spacing[1]),
        origin=first.position,
        direction=tuple(direction.ravel()),
        path=folder,
    )


def read_series_headers(
    folder: str | os.PathLike, series_uid: str | None = None, spacing_tolerance: float = 0.01
) -> list[pydicom.Dataset]:
    """Headers (no pixel data) of one series' slices in the order :func:`read_dicom_series` stacks them
    (array index ``z``); each dataset's ``filename`` is its file. Same errors as :func:`read_dicom_series`."""
    ordered, _, _ = _series_slices(Path(folder), series_uid, spacing_tolerance)
    return [pydicom.dcmread(s.path, stop_before_pixels=True) for s in ordered]


def headers_geometry(headers: list, folder: str | os.PathLike | None = None) -> Volume:
    """A pixel-less :class:`Volume` with the grid of a sorted series' headers (:func:`read_series_headers`),
    for geometry checks without reading the pixels."""
    row = np.asarray(headers[0].ImageOrientationPatient[:3], dtype=np.float64)
    col = np.asarray(headers[0].ImageOrientationPatient[3:], dtype=np.float64)
    normal = np.cross(row, col)
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    dz = float(np.mean(np.diff(positions @ normal))) if len(headers) > 1 else 1.0
    dy, dx = (float(v) for v in headers[0].PixelSpacing)
    shape = (len(headers), int(headers[0].Rows), int(headers[0].Columns))
    array = np.broadcast_to(np.zeros((), dtype=np.uint8), shape)
    return Volume(array, (dz, dy, dx), tuple(positions[0]), tuple(np.stack([row, col, normal], 1).ravel()),
                  Path(folder) if folder is not None else None)




def _first_unreadable(paths: list[Path]) -> Path | None:
    for path in paths:
        try:
            sitk.ReadImage(str(path))
        except RuntimeError:
            return path
    return None


def read_dicom_file(path: str | os.PathLike) -> Volume:
    """A single DICOM file (one slice, or a multi-frame image) as a volume in real units."""
    path = Path(path)
    check_dicom_complete(path, "DICOM file")
    try:
        pydicom.dcmread(path, stop_before_pixels=True)
        image = sitk.ReadImage(str(path))
    except Exception as exc:
        raise ValueError(f"{path}: unreadable or truncated DICOM file ({str(exc).strip()[-200:]})") from None
    return Volume.from_sitk(image, path)


def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike,
    *,
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    series_uid: str | None = None,
    modality: str = "CT",
    shuffle_names: bool = False,
    seed: int = 0,
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    extra_tags: dict | None = None,
) -> list[Path]:
    """Write a 3D volume as a DICOM series of int16 slices with ``HU = stored * slope + intercept``.

    Geometry: ``ImageOrientationPatient`` from the first two direction columns, ``ImagePositionPatient``
    of slice ``k`` = ``origin + k * spacing_z * direction[:, 2]``. DICOM's slice normal is always
    row x column, so a left-handed grid (``det(direction) < 0``) is stored reversed in z: it reads back as
    the same voxels in physical space with the third axis flipped. With ``shuffle_names`` the file names do
    not follow slice order (to test that readers sort by position). ``extra_tags`` (keyword -> value, e.g.
    ``{"PatientName": "Doe^Jane", "InstitutionName": "..."}``) are set on every slice.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    if volume.array.ndim != 3:
        raise ValueError(f"volume must be 3D, got shape {volume.shape}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stored = np.round((volume.array.astype(np.float64) - rescale_intercept) / rescale_slope)
    if stored.min() < -32768 or stored.max() > 32767:
        raise ValueError("volume values do not fit int16 with this rescale_slope/intercept")
    stored = stored.astype(np.int16)
    direction = volume.direction_matrix.copy()
    dz, dy, dx = volume.spacing
    origin = np.asarray(volume.origin, dtype=np.float64)
    if np.linalg.det(direction) < 0:  # DICOM stacks along row x col: store a left-handed grid reversed in z
        origin = origin + (volume.shape[0] - 1) * dz * direction[:, 2]
        direction[:, 2] = -direction[:, 2]
        stored = stored[::-1]
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = frame_of_reference_uid or generate_uid()
    names = [f"slice_{k:04d}.dcm" for k in range(volume.shape[0])]
    if shuffle_names:
        names = list(np.random.default_rng(seed).permutation(names))
    paths = []
    for k in range(volume.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / names[k]), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = modality
        ds.PatientID = "segbalance-synthetic"
        ds.InstanceNumber = volume.shape[0] - k  # deliberately not the sort key
        position = origin + k * dz * direction[:, 2]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([direction[:, 0], direction[:, 1]])]
        ds.PixelSpacing = [f"{dy:.6f}", f"{dx:.6f}"]
        ds.SliceThickness = f"{dz:.6f}"
        ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = f"{rescale_slope:g}"
        ds.RescaleIntercept = f"{rescale_intercept:g}"
        ds.RescaleType = "HU"
        ds.PixelData = stored[k].tobytes()
        for keyword, value in (extra_tags or {}).items():
            setattr(ds, keyword, value)
        path = folder / names[k]
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
