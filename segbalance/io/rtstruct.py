"""RTSTRUCT contours: rasterized on an image's grid (read) and traced from masks (write).

Reading: contours (``CLOSED_PLANAR``, patient coordinates in mm) are mapped through the image's orientation,
origin and spacing to continuous voxel indices; each must lie in one image slice (within a quarter of the
slice spacing). A voxel belongs to a ROI when its centre lies inside an odd number of the ROI's contours
on that slice (:func:`even_odd_fill`: the even-odd rule, so contours combine by XOR and inner contours
cut holes) **or on one of them** (within :data:`BOUNDARY_TOLERANCE` of a pixel; :func:`fill_contours`):
contours drawn through the centres of the boundary voxels (rt-utils, OpenCV- and highdicom-based tools;
one- and two-point contours of a tiny structure included) read back exactly.

Writing: :func:`write_rtstruct` (docs/dicom.md).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import numpy as np

from segbalance.extras import require

require("pydicom", needed_for="RTSTRUCT labels")

import pydicom  # noqa: E402

from segbalance.atomic import atomic_write  # noqa: E402
from segbalance.io.dicom_common import (  # noqa: E402
    COLOURS,
    COPIED_TAGS,
    RTSTRUCT_SOP_CLASS,
    index_matrix,
    match_names,
    paint,
)
from segbalance.io.volume import Volume  # noqa: E402

__all__ = ["rasterize_rtstruct", "even_odd_fill", "boundary_pixels", "fill_contours", "BOUNDARY_TOLERANCE",
           "write_rtstruct"]


def _contour_points(contour: pydicom.Dataset) -> np.ndarray:
    """``ContourData`` as an ``(n, 3)`` float array, parsed from the raw bytes (pydicom's per-value ``DS``
    objects are slow for contours of thousands of points; a long contour saved as ``UN`` is handled too)."""
    raw = contour.get_item("ContourData")
    value = raw.value if raw is not None else None
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).replace(b"\0", b" ").strip()
        values = np.array(text.split(b"\\"), dtype=np.float64) if text else np.zeros(0)
    else:
        values = np.asarray(contour.ContourData, dtype=np.float64)
    if values.size % 3:
        raise ValueError(f"ContourData holds {values.size} numbers, not (x, y, z) triplets")
    return values.reshape(-1, 3)


def even_odd_fill(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre is inside an odd number of the closed ``polygons`` (each ``(n, 2)`` of continuous
    ``(row, col)`` pixel indices; integer = pixel centre): the even-odd rule, so contours of one slice
    combine by XOR and an inner contour cuts a hole.

    Scanline fill: every edge's crossings with the pixel-centre rows (half-open in the row, so a vertex
    on a row counts once) add 1 at ``ceil(col)``, and a running sum along the row gives the parity. A
    centre exactly on a left edge is inside, on a right edge outside. Cost grows with the number of
    crossings, not with polygon area times vertices (unlike a point-in-polygon test per pixel).
    """
    ny, nx = shape
    count = np.zeros((ny, nx + 1), dtype=np.int32)
    for poly in polygons:
        p0 = np.asarray(poly, dtype=np.float64)
        p1 = np.roll(p0, -1, axis=0)
        y0, x0, y1, x1 = p0[:, 0], p0[:, 1], p1[:, 0], p1[:, 1]
        lo = np.clip(np.ceil(np.minimum(y0, y1)), 0, ny).astype(np.int64)
        hi = np.clip(np.ceil(np.maximum(y0, y1)), 0, ny).astype(np.int64)
        n = np.where(y0 != y1, hi - lo, 0)
        if not n.any():
            continue
        edge = np.repeat(np.arange(len(p0)), n)
        rows = lo[edge] + (np.arange(edge.size) - np.repeat(np.cumsum(n) - n, n))
        t = (rows - y0[edge]) / (y1[edge] - y0[edge])
        cols = np.clip(np.ceil(x0[edge] + t * (x1[edge] - x0[edge])), 0, nx).astype(np.int64)
        np.add.at(count, (rows, cols), 1)
    return (np.cumsum(count[:, :nx], axis=1) % 2).astype(bool)


#: A voxel centre within this distance (in pixels, i.e. this fraction of the pixel spacing) of a contour
#: lies *on* it and is inside. Contours written to 0.01 mm on 0.5 mm pixels are off by up to 0.01 pixel.
BOUNDARY_TOLERANCE = 0.02


def boundary_pixels(polygons: list[np.ndarray], shape: tuple[int, int],
                    tolerance: float = BOUNDARY_TOLERANCE) -> np.ndarray:
    """Pixels whose centre lies on a closed polygon's outline (within ``tolerance`` pixels): the vertices and
    edges of each ``(n, 2)`` array of ``(row, col)`` indices, a one- or two-point "polygon" included.

    Vectorised over edges: each edge is sampled where it crosses a pixel-centre row and where it crosses a
    pixel-centre column (its end points clipped in); a sample within ``tolerance`` of a centre in both
    coordinates marks that centre. Every centre within ``tolerance / sqrt(2)`` of an edge is found.
    """
    ny, nx = shape
    out = np.zeros(shape, dtype=bool)
    for poly in polygons:
        p0 = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if not len(p0):
            continue
        p1 = np.roll(p0, -1, axis=0)
        for axis in (0, 1):  # samples at integer rows, then at integer columns
            a0, a1 = p0[:, axis], p1[:, axis]
            lo = np.ceil(np.minimum(a0, a1) - tolerance).astype(np.int64)
            hi = np.floor(np.maximum(a0, a1) + tolerance).astype(np.int64)
            n = np.maximum(hi - lo + 1, 0)
            if not n.any():
                continue
            edge = np.repeat(np.arange(len(p0)), n)
            at = lo[edge] + (np.arange(edge.size) - np.repeat(np.cumsum(n) - n, n))
            da = a1[edge] - a0[edge]
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.where(da != 0, (at - a0[edge]) / da, 0.0)
            t = np.clip(t, 0.0, 1.0)
            pts = p0[edge] + t[:, None] * (p1[edge] - p0[edge])
            centre = np.round(pts)
            hit = np.all(np.abs(pts - centre) <= tolerance, axis=1)
            r, c = centre[hit, 0].astype(np.int64), centre[hit, 1].astype(np.int64)
            keep = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
            out[r[keep], c[keep]] = True
    return out


def fill_contours(polygons: list[np.ndarray], shape: tuple[int, int],
                  tolerance: float = BOUNDARY_TOLERANCE) -> np.ndarray:
    """The RTSTRUCT rasterization rule for the contours of one ROI on one slice: a pixel is inside when its
    centre lies inside an odd number of the contours (:func:`even_odd_fill`, so inner contours cut holes)
    **or on any contour** (:func:`boundary_pixels`), as rt-utils, plastimatch and the tools whose contours
    run through the centres of the boundary pixels expect."""
    polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons]
    mask = even_odd_fill([p for p in polygons if len(p) >= 3], shape)
    return mask | boundary_pixels(polygons, shape, tolerance)


def rasterize_rtstruct(ds: pydicom.Dataset, reference: Volume, label_map: dict[int, str],
                       path: str | os.PathLike = "RTSTRUCT") -> np.ndarray:
    """Label array (z, y, x) on ``reference``'s grid from an RTSTRUCT dataset (see the module docstring)."""
    path = Path(path)
    if reference.array.ndim != 3:
        raise ValueError(f"{path}: RTSTRUCT labels need a 3D image, got shape {reference.shape}")
    names = {int(r.ROINumber): str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])}
    if label_map is None:
        raise ValueError(f"{path}: an RTSTRUCT label needs a label map naming its ROIs (e.g. --label-map "
                         f"1=GTV); its ROIs are: {', '.join(repr(n) for n in names.values()) or 'none'}")
    wanted = match_names(names, label_map, path, "rtstruct")
    contours = {int(c.ReferencedROINumber): c for c in ds.get("ROIContourSequence", [])}
    a, origin = index_matrix(reference)
    nz, ny, nx = reference.shape
    masks = {}
    for value, number in wanted.items():
        per_slice: dict[int, list[np.ndarray]] = {}
        for contour in contours.get(number, pydicom.Dataset()).get("ContourSequence", []):
            if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")).upper() != "CLOSED_PLANAR":
                continue  # POINT / OPEN_PLANAR / OPEN_NONPLANAR enclose no area
            points = _contour_points(contour)
            if not len(points):
                continue
            ijk = (points - origin) @ a.T
            k = float(np.mean(ijk[:, 2]))
            kk = int(round(k))
            if np.ptp(ijk[:, 2]) > 0.25 or abs(k - kk) > 0.25:
                raise ValueError(
                    f"{path}: a contour of ROI {names[number]!r} does not lie in a slice of the image "
                    f"{reference.path} (slice index {k:.2f}, spread {np.ptp(ijk[:, 2]):.2f}); contours must "
                    "be drawn on the image's own slices"
                )
            if not 0 <= kk < nz:
                raise ValueError(f"{path}: ROI {names[number]!r} has a contour at slice index {kk}, outside "
                                 f"the image {reference.path} (0..{nz - 1})")
            per_slice.setdefault(kk, []).append(ijk[:, [1, 0]])  # (row, col)
        mask = np.zeros(reference.shape, dtype=bool)
        for kk, polygons in per_slice.items():
            mask[kk] = fill_contours(polygons, (ny, nx))
        masks[value] = mask
    return paint(masks, reference.shape)



def write_rtstruct(
    masks: dict[str, np.ndarray],
    image_folder: str | os.PathLike,
    path: str | os.PathLike,
    *,
    series_uid: str | None = None,
    label: str = "segbalance",
    headers: list | None = None,
) -> Path:
    """Write ``{ROI name: bool mask (z, y, x)}`` on a DICOM series as an RTSTRUCT file.

    Each slice's mask boundary is traced with :func:`skimage.measure.find_contours` at level 0.5 (so a
    contour runs half-way between inside and outside voxel centres; holes become inner contours) and mapped
    to patient coordinates through the slice's ``ImagePositionPatient``, ``ImageOrientationPatient`` and
    ``PixelSpacing``; collinear points are dropped. Written in Implicit VR Little Endian (a long contour
    exceeds explicit VR's 64 kB element limit). Patient/study identification is copied from the series
    (:data:`COPIED_TAGS`, as DICOM requires); nothing else. ``headers``: the series' sorted headers
    (:func:`~segbalance.io.dicom.read_series_headers`), when already read.
    """
    from segbalance.extras import require

    require("skimage", needed_for="writing RTSTRUCT contours")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ImplicitVRLittleEndian, generate_uid
    from skimage.measure import approximate_polygon, find_contours

    from segbalance.io.dicom import read_series_headers

    headers = headers if headers is not None else read_series_headers(image_folder, series_uid)
    first = headers[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    # implicit VR: element lengths are 32-bit, so a contour of more than 64 kB of text stays DS
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.StudyInstanceUID = first.StudyInstanceUID
    for keyword in COPIED_TAGS:  # patient + study module (Type 2: present, possibly empty)
        setattr(ds, keyword, first[keyword].value if keyword in first else "")
    ds.ReferringPhysicianName = ""  # Type 2 in the General Study module: kept empty, not copied
    ds.AccessionNumber = ""
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 99
    ds.Manufacturer = "segbalance"
    now = datetime.now()
    ds.StructureSetLabel = label
    ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = now.strftime("%H%M%S")
    frame_uid = str(first.FrameOfReferenceUID)

    contour_images = Sequence()
    for h in headers:
        item = pydicom.Dataset()
        item.ReferencedSOPClassUID = h.SOPClassUID
        item.ReferencedSOPInstanceUID = h.SOPInstanceUID
        contour_images.append(item)
    ref_series = pydicom.Dataset()
    ref_series.SeriesInstanceUID = first.SeriesInstanceUID
    ref_series.ContourImageSequence = contour_images
    ref_study = pydicom.Dataset()
    ref_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired)
    ref_study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    ref_study.RTReferencedSeriesSequence = Sequence([ref_series])
    ref_frame = pydicom.Dataset()
    ref_frame.FrameOfReferenceUID = frame_uid
    ref_frame.RTReferencedStudySequence = Sequence([ref_study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref_frame])

    rois, roi_contours, observations = Sequence(), Sequence(), Sequence()
    for number, (name, mask) in enumerate(masks.items(), start=1):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(headers), int(first.Rows), int(first.Columns)):
            raise ValueError(f"mask {name!r} has shape {mask.shape}, the series {image_folder} is "
                             f"{(len(headers), int(first.Rows), int(first.Columns))}")
        roi = pydicom.Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        rois.append(roi)
        contour_seq = Sequence()
        for k in np.flatnonzero(mask.any(axis=(1, 2))):
            h = headers[k]
            row_dir = np.asarray(h.ImageOrientationPatient[:3], dtype=np.float64)
            col_dir = np.asarray(h.ImageOrientationPatient[3:], dtype=np.float64)
            dy, dx = (float(v) for v in h.PixelSpacing)
            pos = np.asarray(h.ImagePositionPatient, dtype=np.float64)
            for c in find_contours(np.pad(mask[k], 1).astype(np.float32), 0.5):
                c = approximate_polygon(c, 1e-6)  # drops collinear points only
                c = c[:-1] - 1.0 if np.allclose(c[0], c[-1]) else c - 1.0  # (row, col), unpadded
                points = pos + np.outer(c[:, 1] * dx, row_dir) + np.outer(c[:, 0] * dy, col_dir)
                item = pydicom.Dataset()
                image_ref = pydicom.Dataset()
                image_ref.ReferencedSOPClassUID = h.SOPClassUID
                image_ref.ReferencedSOPInstanceUID = h.SOPInstanceUID
                item.ContourImageSequence = Sequence([image_ref])
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = len(points)
                item.ContourData = [f"{v:.4f}" for v in points.ravel()]
                contour_seq.append(item)
        roi_contour = pydicom.Dataset()
        roi_contour.ReferencedROINumber = number
        roi_contour.ROIDisplayColor = [int(v) for v in COLOURS[(number - 1) % len(COLOURS)]]
        roi_contour.ContourSequence = contour_seq
        roi_contours.append(roi_contour)
        obs = pydicom.Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = ""
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = roi_contours
    ds.RTROIObservationsSequence = observations
    path = Path(path)
    with atomic_write(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path
