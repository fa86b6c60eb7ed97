"""The RTSTRUCT writer as it was before issue 25 (segbalance 0d7b4da, ``preprocessing/dicom_labels.py``),
kept verbatim for ``benchmarks/rtstruct.py`` to time side by side with the current one. Not used by the
package."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom

from segbalance.atomic import atomic_write
from segbalance.io.dicom_common import COLOURS as _COLOURS
from segbalance.io.dicom_common import COPIED_TAGS, RTSTRUCT_SOP_CLASS


def write_rtstruct_before(
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
