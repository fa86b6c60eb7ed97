"""Labels from DICOM: DICOM-SEG and RTSTRUCT files turned into label volumes on an image's grid.

A case's label may be a DICOM-SEG or RTSTRUCT file (``labels/<case>.dcm``) or a folder holding exactly one
such file (``labels/<case>/``). Segments (SEG) and ROIs (RTSTRUCT) are mapped to label values by *name*
through a label map ``{value: name}`` (``--label-map 1=GTV,2=Lung_L``), compared case-insensitively after
stripping blanks; never by order. Names in the file that the map does not mention are ignored; a name in
the map that the file lacks is an error listing the names found. A DICOM-SEG read without a label map
keeps its ``SegmentNumber`` as the label value. Where structures overlap, the **higher label value wins**.

The label file must refer to the image: its ``FrameOfReferenceUID`` must be the image series' and, when it
names a referenced series, that ``SeriesInstanceUID`` too (checked when the image is a DICOM series; a
NIfTI/MHD image carries no UIDs, so only the geometry is checked).

RTSTRUCT contours (``CLOSED_PLANAR``, patient coordinates in mm) are mapped through the image's
orientation, origin and spacing to continuous voxel indices; each must lie in one image slice (within a
quarter of the slice spacing). A voxel belongs to a ROI when its centre lies inside an odd number of the
ROI's contours on that slice (:func:`even_odd_fill`: the even-odd rule, so contours combine by XOR and
inner contours cut holes) **or on one of them** (within :data:`BOUNDARY_TOLERANCE` of a pixel;
:func:`fill_contours`): contours drawn through the centres of the boundary voxels (rt-utils, OpenCV- and
highdicom-based tools; one- and two-point contours of a tiny structure included) read back exactly.
SEG frames are placed by their ``ImagePositionPatient`` on the image grid (same orientation, pixel
spacing and in-plane origin required, slices matched to 1 % of the spacing), which reads them back
voxel-exactly. :func:`write_rtstruct` writes masks as RTSTRUCT contours (tests, demos).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom

from segbalance.atomic import atomic_write
from segbalance.preprocessing.volume import Volume

__all__ = [
    "SEG_SOP_CLASS",
    "RTSTRUCT_SOP_CLASS",
    "parse_name_map",
    "dicom_label_kind",
    "find_dicom_label",
    "image_series_uids",
    "read_dicom_label",
    "rasterize_rtstruct",
    "even_odd_fill",
    "boundary_pixels",
    "fill_contours",
    "BOUNDARY_TOLERANCE",
    "read_seg",
    "write_rtstruct",
]

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
_KINDS = {SEG_SOP_CLASS: "seg", RTSTRUCT_SOP_CLASS: "rtstruct"}
_WHAT = {"seg": ("segment", "DICOM-SEG"), "rtstruct": ("ROI", "RTSTRUCT")}


def parse_name_map(text: str | dict | None) -> dict[int, str] | None:
    """``"1=GTV,2=Lung_L"`` -> ``{1: "GTV", 2: "Lung_L"}`` (a dict passes through; ``0=`` is allowed)."""
    if text is None or isinstance(text, dict):
        return None if text is None else {int(k): str(v) for k, v in text.items()}
    out: dict[int, str] = {}
    for item in (i.strip() for i in str(text).split(",")):
        if not item:
            continue
        value, sep, name = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--label-map item {item!r} must look like VALUE=NAME (e.g. 1=GTV,2=Lung_L)")
        try:
            v = int(value)
        except ValueError:
            raise ValueError(f"--label-map value {value!r} in {item!r} is not an integer") from None
        if v < 0 or v in out:
            raise ValueError(f"--label-map {text!r}: negative or duplicate value in {item!r}")
        out[v] = name.strip()
    if not out:
        raise ValueError(f"--label-map {text!r} is empty; expected VALUE=NAME,... (e.g. 1=GTV,2=Lung_L)")
    return out


def _norm(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def dicom_label_kind(path: str | os.PathLike) -> str | None:
    """``"seg"``, ``"rtstruct"`` or ``None`` (not a DICOM file, or another kind of DICOM object)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # not DICOM, unreadable, a damaged header: not for us to judge, read_volume reports it
        return None
    return _KINDS.get(str(ds.get("SOPClassUID", "")))


def find_dicom_label(path: str | os.PathLike) -> tuple[Path, str] | None:
    """The SEG/RTSTRUCT file at ``path`` (a file, or a folder holding exactly one) and its kind, else None.

    Raises:
        ValueError: the folder holds several SEG/RTSTRUCT files (listed).
    """
    p = Path(path)
    if p.is_file():
        kind = dicom_label_kind(p)
        return (p, kind) if kind else None
    if not p.is_dir():
        return None
    found = []
    for f in sorted(p.rglob("*")):
        if f.is_file() and not f.name.startswith("."):
            kind = dicom_label_kind(f)
            if kind:
                found.append((f, kind))
    if len(found) > 1:
        listing = ", ".join(f"{f.name} ({k})" for f, k in found)
        raise ValueError(f"{p}: holds {len(found)} DICOM-SEG/RTSTRUCT files ({listing}); a case's label "
                         "folder must hold exactly one")
    return found[0] if found else None


def image_series_uids(folder: str | os.PathLike) -> dict[str, str]:
    """``{SeriesInstanceUID: FrameOfReferenceUID}`` of the image series under a DICOM folder."""
    from segbalance.preprocessing.dicom import list_series

    out = {}
    for uid, slices in list_series(folder).items():
        ds = pydicom.dcmread(slices[0].path, stop_before_pixels=True,
                             specific_tags=["FrameOfReferenceUID"])
        out[uid] = str(ds.get("FrameOfReferenceUID", ""))
    return out


def _referenced_uids(ds: pydicom.Dataset, kind: str) -> tuple[str, list[str]]:
    """The label file's FrameOfReferenceUID and the SeriesInstanceUIDs it references."""
    series: list[str] = []
    if kind == "seg":
        frame = str(ds.get("FrameOfReferenceUID", ""))
        for item in ds.get("ReferencedSeriesSequence", []):
            series.append(str(item.SeriesInstanceUID))
        return frame, series
    frame = ""
    for ref in ds.get("ReferencedFrameOfReferenceSequence", []):
        frame = frame or str(ref.get("FrameOfReferenceUID", ""))
        for study in ref.get("RTReferencedStudySequence", []):
            for s in study.get("RTReferencedSeriesSequence", []):
                series.append(str(s.SeriesInstanceUID))
    if not frame:
        rois = ds.get("StructureSetROISequence", [])
        frame = str(rois[0].get("ReferencedFrameOfReferenceUID", "")) if len(rois) else ""
    return frame, series


def _check_reference(ds: pydicom.Dataset, kind: str, path: Path, reference: Volume) -> None:
    image = reference.path
    if image is None or not Path(image).is_dir():
        return  # NIfTI/MHD/NRRD or a single file: no UIDs to compare, the geometry checks still apply
    uids = image_series_uids(image)
    frame, series = _referenced_uids(ds, kind)
    what = _WHAT[kind][1]
    if series and not set(series) & set(uids):
        raise ValueError(f"{path}: this {what} refers to series {', '.join(series)}, but the image {image} "
                         f"is series {', '.join(sorted(uids))}; label and image do not belong together")
    image_frames = {uids[s] for s in series if s in uids} or set(uids.values())
    if frame and frame not in image_frames:
        raise ValueError(f"{path}: this {what}'s FrameOfReferenceUID {frame} differs from the image "
                         f"{image}'s {', '.join(sorted(image_frames))}; label and image do not match")


def _match(names: dict[int, str], label_map: dict[int, str], path: Path, kind: str) -> dict[int, int]:
    """``{label value: number in the file}`` for every non-zero entry of ``label_map``."""
    what, where = _WHAT[kind]
    by_name: dict[str, list[int]] = {}
    for number, name in names.items():
        by_name.setdefault(_norm(name), []).append(number)
    out = {}
    found = ", ".join(repr(n) for n in names.values()) or "none"
    for value, name in sorted(label_map.items()):
        if value == 0:
            continue
        numbers = by_name.get(_norm(name), [])
        if not numbers:
            raise ValueError(f"{path}: no {what} named {name!r} (label {value}) in this {where}; "
                             f"its {what}s are: {found}")
        if len(numbers) > 1:  # only an error for a structure the map asks for
            raise ValueError(f"{path}: {len(numbers)} {what}s are named {name!r} (numbers "
                             f"{', '.join(map(str, numbers))}); the label map cannot tell them apart")
        out[value] = numbers[0]
    if not out:
        raise ValueError(f"{path}: the label map {label_map} names no structure (only background); "
                         f"the {where}'s {what}s are: {found}")
    return out


def _index_matrix(reference: Volume) -> tuple[np.ndarray, np.ndarray]:
    """``(A, o)`` such that the continuous voxel index ``(i, j, k) = A @ (p - o)`` (x, y, z axes)."""
    sz, sy, sx = reference.spacing
    m = reference.direction_matrix @ np.diag([sx, sy, sz])
    return np.linalg.inv(m), np.asarray(reference.origin, dtype=np.float64)


def _paint(masks: dict[int, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Label volume from ``{value: mask}``; painted in ascending value, so the higher value wins overlaps."""
    top = max(masks, default=0)
    out = np.zeros(shape, dtype=np.uint8 if top <= 255 else np.uint16)
    for value in sorted(masks):
        out[masks[value]] = value
    return out


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
    wanted = _match(names, label_map, path, "rtstruct")
    contours = {int(c.ReferencedROINumber): c for c in ds.get("ROIContourSequence", [])}
    a, origin = _index_matrix(reference)
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
    return _paint(masks, reference.shape)


def read_seg(ds: pydicom.Dataset, reference: Volume, label_map: dict[int, str] | None,
             path: str | os.PathLike = "SEG") -> np.ndarray:
    """Label array (z, y, x) on ``reference``'s grid from a DICOM-SEG dataset (see the module docstring)."""
    path = Path(path)
    names = {int(s.SegmentNumber): str(s.get("SegmentLabel", "")) for s in ds.get("SegmentSequence", [])}
    wanted = {n: n for n in names} if label_map is None else _match(names, label_map, path, "seg")
    nz, ny, nx = reference.shape
    if (int(ds.Rows), int(ds.Columns)) != (ny, nx):
        raise ValueError(f"{path}: DICOM-SEG frames are {ds.Rows}x{ds.Columns} pixels, the image "
                         f"{reference.path} has {ny}x{nx}")
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    frames = ds.PerFrameFunctionalGroupsSequence

    def group(i: int, name: str):
        item = frames[i]
        if name in item:
            return item[name].value[0]
        if shared is not None and name in shared:
            return shared[name].value[0]
        raise ValueError(f"{path}: frame {i + 1} has no {name}")

    a, origin = _index_matrix(reference)
    ref_dir = reference.direction_matrix
    pixels = ds.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[None]
    threshold = 0
    if str(ds.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL":
        threshold = float(ds.get("MaximumFractionalValue", 255)) / 2
    by_number: dict[int, np.ndarray] = {}
    sy, sx = reference.spacing[1], reference.spacing[2]
    for i in range(len(frames)):
        number = int(group(i, "SegmentIdentificationSequence").ReferencedSegmentNumber)
        if number not in wanted.values():
            continue
        orient = np.asarray(group(i, "PlaneOrientationSequence").ImageOrientationPatient, dtype=np.float64)
        if not (np.allclose(orient[:3], ref_dir[:, 0], atol=1e-3) and np.allclose(orient[3:], ref_dir[:, 1],
                                                                                    atol=1e-3)):
            raise ValueError(f"{path}: frame {i + 1} orientation {orient.round(4).tolist()} differs from the "
                             f"image {reference.path}'s; DICOM-SEG must be on the image grid")
        spacing = [float(v) for v in group(i, "PixelMeasuresSequence").PixelSpacing]
        if not np.allclose(spacing, [sy, sx], rtol=1e-3):
            raise ValueError(f"{path}: frame {i + 1} pixel spacing {spacing} differs from the image "
                             f"{reference.path}'s {[sy, sx]}")
        position = np.asarray(group(i, "PlanePositionSequence").ImagePositionPatient, dtype=np.float64)
        ijk = a @ (position - origin)
        k = int(round(ijk[2]))
        if np.abs(ijk[:2]).max() > 0.01 or abs(ijk[2] - k) > 0.01 or not 0 <= k < nz:
            raise ValueError(f"{path}: frame {i + 1} at {position.round(3).tolist()} mm is not on a slice of "
                             f"the image {reference.path} (voxel index {ijk.round(3).tolist()})")
        mask = by_number.setdefault(number, np.zeros(reference.shape, dtype=bool))
        mask[k] |= pixels[i] > threshold
    masks = {value: by_number.get(number, np.zeros(reference.shape, dtype=bool))
             for value, number in wanted.items()}
    return _paint(masks, reference.shape)


def read_dicom_label(path: str | os.PathLike, reference: Volume,
                     label_map: dict[int, str] | str | None = None) -> Volume:
    """The label volume of a DICOM-SEG/RTSTRUCT file (or a folder holding one) on ``reference``'s grid.

    Raises:
        ValueError: not a SEG/RTSTRUCT, several in the folder, a label-map name missing (the names found
            are listed), a label file that refers to another series or frame of reference (both files
            named), or contours/frames off the image grid.
    """
    found = find_dicom_label(path)
    if found is None:
        raise ValueError(f"{path}: not a DICOM-SEG or RTSTRUCT file (nor a folder holding one)")
    file, kind = found
    label_map = parse_name_map(label_map) if isinstance(label_map, str) else label_map
    try:
        ds = pydicom.dcmread(file)
    except Exception as exc:
        raise ValueError(f"{file}: unreadable {_WHAT[kind][1]} ({type(exc).__name__}: {exc})") from None
    _check_reference(ds, kind, file, reference)
    if kind == "seg":
        array = read_seg(ds, reference, label_map, file)
    else:
        array = rasterize_rtstruct(ds, reference, label_map, file)
    return Volume(array, reference.spacing, reference.origin, reference.direction, file)


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
    (:func:`~segbalance.preprocessing.dicom.read_series_headers`), when already read.
    """
    from segbalance.extras import require

    require("skimage", needed_for="writing RTSTRUCT contours")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ImplicitVRLittleEndian, generate_uid
    from skimage.measure import approximate_polygon, find_contours

    from segbalance.preprocessing.dicom import read_series_headers

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
        roi_contour.ROIDisplayColor = [int(v) for v in _COLOURS[(number - 1) % len(_COLOURS)]]
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


# copied from the image series into what segbalance writes (patient and study identification only)
COPIED_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
               "StudyID")

# RGB display colours (RTSTRUCT ROIDisplayColor; DICOM-SEG converts them to CIELab)
_COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]
