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
import struct
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
           "write_rtstruct", "LARGE_RTSTRUCT_BYTES"]


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


def _edges(polygons: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Start and end points ``(n_edges, 2)`` of every edge of every closed polygon, all polygons at once
    (the last vertex of each joins its first)."""
    polys = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons]
    polys = [p for p in polys if len(p)]
    if not polys:
        return np.zeros((0, 2)), np.zeros((0, 2))
    p0 = np.concatenate(polys)
    lengths = np.array([len(p) for p in polys])
    starts = np.cumsum(lengths) - lengths
    nxt = np.arange(len(p0)) + 1
    ends = starts + lengths  # one past each polygon's last vertex
    nxt[ends - 1] = starts
    return p0, p0[nxt]


def _runs(lo: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For items with ``n`` integers from ``lo`` each: (item index, integer) of every one, vectorised."""
    item = np.repeat(np.arange(len(n)), n)
    at = lo[item] + (np.arange(item.size) - np.repeat(np.cumsum(n) - n, n))
    return item, at


def even_odd_fill(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre is inside an odd number of the closed ``polygons`` (each ``(n, 2)`` of continuous
    ``(row, col)`` pixel indices; integer = pixel centre): the even-odd rule, so contours of one slice
    combine by XOR and an inner contour cuts a hole.

    Scanline fill: every edge's crossings with the pixel-centre rows (half-open in the row, so a vertex
    on a row counts once) add 1 at ``ceil(col)``, and a running sum along the row gives the parity. A
    centre exactly on a left edge is inside, on a right edge outside (:func:`fill_contours` adds every
    centre on a contour). All edges of all polygons are processed at once; cost grows with the number of
    crossings, not with polygon area times vertices (unlike a point-in-polygon test per pixel).
    """
    ny, nx = shape
    count = np.zeros((ny, nx + 1), dtype=np.int32)
    p0, p1 = _edges([p for p in polygons if len(np.asarray(p).reshape(-1, 2)) >= 3])
    y0, x0, y1, x1 = p0[:, 0], p0[:, 1], p1[:, 0], p1[:, 1]
    lo = np.clip(np.ceil(np.minimum(y0, y1)), 0, ny).astype(np.int64)
    hi = np.clip(np.ceil(np.maximum(y0, y1)), 0, ny).astype(np.int64)
    n = np.where(y0 != y1, hi - lo, 0)
    if n.any():
        edge, rows = _runs(lo, n)
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

    Vectorised over all edges: each edge is sampled where it crosses a pixel-centre row and where it
    crosses a pixel-centre column (its end points clipped in); a sample within ``tolerance`` of a centre in
    both coordinates marks that centre. Every centre within ``tolerance / sqrt(2)`` of an edge is found.
    """
    ny, nx = shape
    out = np.zeros(shape, dtype=bool)
    p0, p1 = _edges(polygons)
    for axis in (0, 1):  # samples at integer rows, then at integer columns
        a0, a1 = p0[:, axis], p1[:, axis]
        lo = np.ceil(np.minimum(a0, a1) - tolerance).astype(np.int64)
        hi = np.floor(np.maximum(a0, a1) + tolerance).astype(np.int64)
        n = np.maximum(hi - lo + 1, 0)
        if not n.any():
            continue
        edge, at = _runs(lo, n)
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



#: a written RTSTRUCT larger than this is announced with a warning before it is written (bytes)
LARGE_RTSTRUCT_BYTES = 20_000_000


def _tag(tag: int) -> bytes:
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF)


def _element(tag: int, value: bytes, pad: bytes = b" ") -> bytes:
    """One Implicit VR Little Endian element with a defined length (value padded to even length)."""
    if len(value) % 2:
        value += pad
    return _tag(tag) + struct.pack("<I", len(value)) + value


def _item(content: bytes) -> bytes:
    return b"\xfe\xff\x00\xe0" + struct.pack("<I", len(content)) + content


def _sequence(tag: int, items: list[bytes]) -> bytes:
    body = b"".join(items)
    return _tag(tag) + struct.pack("<I", len(body)) + body


def _slice_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed ``(n, 2)`` ``(row, col)`` contours of one slice's mask, half-way between inside and outside
    centres (marching squares at level 0.5, :func:`skimage.measure.find_contours`), with the points where a
    contour goes straight on removed (vectorised over all contours). A one-voxel component becomes a
    one-point contour at its centre, as rt-utils writes it (a centre on the contour is inside)."""
    from skimage.measure import find_contours

    contours = [c[:-1] - 1.0 for c in find_contours(np.pad(mask, 1).astype(np.float32), 0.5)]
    contours = [c for c in contours if len(c)]
    if not contours:
        return []
    pts = np.concatenate(contours)
    lengths = np.array([len(c) for c in contours])
    starts = np.cumsum(lengths) - lengths
    index = np.arange(len(pts))
    prev, nxt = index - 1, index + 1
    prev[starts] = starts + lengths - 1
    nxt[starts + lengths - 1] = starts
    d0, d1 = pts - pts[prev], pts[nxt] - pts
    keep = np.abs(d0[:, 0] * d1[:, 1] - d0[:, 1] * d1[:, 0]) > 1e-9
    owner = np.repeat(np.arange(len(contours)), lengths)
    out = []
    kept = np.split(pts[keep], np.cumsum(np.bincount(owner[keep], minlength=len(contours)))[:-1])
    for c in kept:
        if len(c) == 4 and np.allclose(np.ptp(c, axis=0), 1.0):  # a diamond around one centre
            centre = np.round(c.mean(axis=0))
            r, col = int(centre[0]), int(centre[1])
            if mask[r, col]:  # a one-voxel component (not a one-voxel hole)
                out.append(centre[None])
                continue
        out.append(c)
    return out


def _decimals(spacing: tuple[float, float]) -> int:
    """Decimals (mm) that keep every written point within 0.05 pixel of where it was computed."""
    return int(min(6, max(1, np.ceil(-np.log10(0.1 * min(spacing))))))


def write_rtstruct(
    masks: dict[str, np.ndarray],
    image_folder: str | os.PathLike,
    path: str | os.PathLike,
    *,
    series_uid: str | None = None,
    label: str = "segbalance",
    headers: list | None = None,
    progress: bool = False,
    warn_bytes: int = LARGE_RTSTRUCT_BYTES,
) -> Path:
    """Write ``{ROI name: bool mask (z, y, x)}`` on a DICOM series as an RTSTRUCT file.

    Each slice's mask boundary is traced at once (:func:`_slice_contours`: marching squares at level 0.5,
    so a contour runs half-way between inside and outside voxel centres and holes become inner contours;
    collinear points dropped; a one-voxel component as the one-point contour at its centre) and mapped to
    patient coordinates through the slice's ``ImagePositionPatient``, ``ImageOrientationPatient`` and
    ``PixelSpacing``, written with the fewest decimals that keep each point within 0.05 pixel. Every slice is
    then rasterized back with this module's reader rule and compared with the mask; a slice that would not
    come back voxel for voxel is written again at full precision without the one-point contours (and an
    error is raised if even that differs), so :func:`~segbalance.io.dicom_labels.read_dicom_label` returns
    the masks exactly.

    The ROI Contour Sequence is encoded directly (Implicit VR Little Endian, defined lengths: no delimiter
    items; a long contour would exceed explicit VR's 64 kB element limit) and the file is written once,
    atomically. ``progress`` shows a bar over the slices; when the file will exceed ``warn_bytes`` a
    :class:`UserWarning` says so (with the contour count) before it is written: a noisy prediction makes
    one contour per speck, and DICOM-SEG stores it in a fraction of the size. Patient/study identification
    is copied from the series (:data:`COPIED_TAGS`, as DICOM requires); nothing else. ``headers``: the
    series' sorted headers (:func:`~segbalance.io.dicom.read_series_headers`), when already read.
    """
    import io
    import warnings

    from segbalance.extras import require

    require("skimage", "tqdm", needed_for="writing RTSTRUCT contours")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ImplicitVRLittleEndian, generate_uid
    from tqdm.auto import tqdm

    from segbalance.io.dicom import headers_geometry, read_series_headers

    headers = headers if headers is not None else read_series_headers(image_folder, series_uid)
    first = headers[0]
    shape = (len(headers), int(first.Rows), int(first.Columns))
    masks = {name: np.asarray(mask, dtype=bool) for name, mask in masks.items()}
    for name, mask in masks.items():
        if mask.shape != shape:
            raise ValueError(f"mask {name!r} has shape {mask.shape}, the series {image_folder} is {shape}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
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

    rois, observations = Sequence(), Sequence()
    for number, name in enumerate(masks, start=1):
        roi = pydicom.Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        rois.append(roi)
        obs = pydicom.Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = ""
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = rois

    # -- the contours: traced per slice, checked by reading them back, encoded as bytes
    reference = headers_geometry(headers)
    a, origin = index_matrix(reference)
    geometric_type = _element(0x30060042, b"CLOSED_PLANAR")
    slices = {name: np.flatnonzero(mask.any(axis=(1, 2))) for name, mask in masks.items()}
    bar = tqdm(total=sum(len(k) for k in slices.values()), desc=f"RTSTRUCT {Path(path).name}", unit="slice",
               disable=not progress)
    roi_items: list[bytes] = []
    n_contours = 0
    for number, (name, mask) in enumerate(masks.items(), start=1):
        items: list[bytes] = []
        for k in slices[name]:
            h = headers[k]
            row_dir = np.asarray(h.ImageOrientationPatient[:3], dtype=np.float64)
            col_dir = np.asarray(h.ImageOrientationPatient[3:], dtype=np.float64)
            dy, dx = (float(v) for v in h.PixelSpacing)
            pos = np.asarray(h.ImagePositionPatient, dtype=np.float64)
            image_ref = _sequence(0x30060016, [_item(
                _element(0x00081150, str(h.SOPClassUID).encode(), b"\0")
                + _element(0x00081155, str(h.SOPInstanceUID).encode(), b"\0"))])
            contours = _slice_contours(mask[k])
            for attempt, decimals in enumerate((_decimals((dy, dx)), 6)):
                if attempt:  # full precision, every contour half-way between centres: exact by construction
                    from skimage.measure import find_contours

                    padded = np.pad(mask[k], 1).astype(np.float32)
                    contours = [c[:-1] - 1.0 for c in find_contours(padded, 0.5)]
                if not contours:
                    points: list[np.ndarray] = []
                    break
                rc = np.concatenate(contours)  # all contours of the slice at once, split afterwards
                cuts = np.cumsum([len(c) for c in contours])[:-1]
                world = np.round(pos + np.outer(rc[:, 1] * dx, row_dir) + np.outer(rc[:, 0] * dy, col_dir),
                                 decimals)
                points = np.split(world, cuts)
                back = np.split(((world - origin) @ a.T)[:, [1, 0]], cuts)
                if np.array_equal(fill_contours(back, mask[k].shape), mask[k]):
                    break
            else:
                raise RuntimeError(f"{path}: the contours of ROI {name!r} on slice {k} do not rasterize back "
                                   "to the mask (a bug: please report it)")
            for p in points:
                text = "\\".join(map(repr, p.ravel().tolist())).encode()
                items.append(_item(image_ref + geometric_type + _element(0x30060046, str(len(p)).encode())
                                   + _element(0x30060050, text)))
            n_contours += len(points)
            bar.update(1)
        colour = "\\".join(str(int(v)) for v in COLOURS[(number - 1) % len(COLOURS)]).encode()
        roi_items.append(_item(_element(0x3006002A, colour) + _sequence(0x30060040, items)
                               + _element(0x30060084, str(number).encode())))
    bar.close()
    contour_bytes = _sequence(0x30060039, roi_items)

    # -- one write: the dataset up to (3006,0020), the ROI Contour Sequence, the observations
    head = io.BytesIO()
    ds.save_as(head, enforce_file_format=True)
    tail = DicomBytesIO()
    tail.is_little_endian, tail.is_implicit_VR = True, True
    rest = pydicom.Dataset()
    rest.RTROIObservationsSequence = observations
    write_dataset(tail, rest)
    data = head.getvalue() + contour_bytes + tail.getvalue()
    if len(data) > warn_bytes:
        warnings.warn(f"{path}: writing an RTSTRUCT of {len(data) / 1e6:.0f} MB with {n_contours} contours "
                      "(one per connected piece per slice; a noisy prediction has thousands): consider "
                      "removing small components first, or --format dicom-seg, which stores the same voxels "
                      "far smaller", UserWarning, stacklevel=2)
    path = Path(path)
    with atomic_write(path) as tmp:
        Path(tmp).write_bytes(data)
    return path
