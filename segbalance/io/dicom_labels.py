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

RTSTRUCT contours are rasterized by :mod:`segbalance.io.rtstruct` (a voxel centre inside or on a contour).
SEG frames are placed by their ``ImagePositionPatient`` on the image grid (same orientation, pixel
spacing and in-plane origin required, slices matched to 1 % of the spacing), which reads them back
voxel-exactly. RTSTRUCT contours: :mod:`segbalance.io.rtstruct`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segbalance.extras import require

require("pydicom", needed_for="DICOM-SEG and RTSTRUCT labels")

import pydicom  # noqa: E402

from segbalance.io.dicom_common import (  # noqa: E402
    KINDS,
    RTSTRUCT_SOP_CLASS,
    SEG_SOP_CLASS,
    WHAT,
    DamagedFileError,
    check_dicom_complete,
    index_matrix,
    match_names,
    paint,
    parse_name_map,
)
from segbalance.io.rtstruct import rasterize_rtstruct  # noqa: E402
from segbalance.io.volume import Volume  # noqa: E402

#: top-level attributes every file of a kind has (Type 1); one missing means the file is damaged
REQUIRED = {"rtstruct": ("StructureSetROISequence", "ROIContourSequence"),
            "seg": ("SegmentSequence", "PerFrameFunctionalGroupsSequence", "PixelData")}

__all__ = [
    "SEG_SOP_CLASS",
    "RTSTRUCT_SOP_CLASS",
    "parse_name_map",
    "dicom_label_kind",
    "find_dicom_label",
    "image_series_uids",
    "read_dicom_label",
    "read_seg",
]


def dicom_label_kind(path: str | os.PathLike) -> str | None:
    """``"seg"``, ``"rtstruct"`` or ``None`` (not a DICOM file, or another kind of DICOM object)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # not DICOM, unreadable, a damaged header: not for us to judge, read_volume reports it
        return None
    return KINDS.get(str(ds.get("SOPClassUID", "")))


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
    from segbalance.io.dicom import list_series

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
    what = WHAT[kind][1]
    if series and not set(series) & set(uids):
        raise ValueError(f"{path}: this {what} refers to series {', '.join(series)}, but the image {image} "
                         f"is series {', '.join(sorted(uids))}; label and image do not belong together")
    image_frames = {uids[s] for s in series if s in uids} or set(uids.values())
    if frame and frame not in image_frames:
        raise ValueError(f"{path}: this {what}'s FrameOfReferenceUID {frame} differs from the image "
                         f"{image}'s {', '.join(sorted(image_frames))}; label and image do not match")



def read_seg(ds: pydicom.Dataset, reference: Volume, label_map: dict[int, str] | None,
             path: str | os.PathLike = "SEG") -> np.ndarray:
    """Label array (z, y, x) on ``reference``'s grid from a DICOM-SEG dataset (see the module docstring)."""
    path = Path(path)
    names = {int(s.SegmentNumber): str(s.get("SegmentLabel", "")) for s in ds.get("SegmentSequence", [])}
    wanted = {n: n for n in names} if label_map is None else match_names(names, label_map, path, "seg")
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

    a, origin = index_matrix(reference)
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
    return paint(masks, reference.shape)



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
    check_dicom_complete(file, WHAT[kind][1])
    try:
        ds = pydicom.dcmread(file)
    except Exception as exc:
        raise DamagedFileError(f"{file}: damaged or unreadable {WHAT[kind][1]} ({type(exc).__name__}: "
                               f"{exc})") from None
    check_dicom_complete(file, WHAT[kind][1], dataset=ds, required=REQUIRED[kind])
    _check_reference(ds, kind, file, reference)
    if kind == "seg":
        array = read_seg(ds, reference, label_map, file)
    else:
        array = rasterize_rtstruct(ds, reference, label_map, file)
    return Volume(array, reference.spacing, reference.origin, reference.direction, file)
