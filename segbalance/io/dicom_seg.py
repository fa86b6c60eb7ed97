"""Label volumes as DICOM-SEG (highdicom ``Segmentation``) that reference their source DICOM series.

One segment per label value, in ascending value order (``SegmentNumber`` 1, 2, ...), named and coloured
from the label map (``{value: name}``; without one, ``label_<v>``). Every segment carries the algorithm
identification (``segbalance`` + version, family "Artificial Intelligence", parameters such as the loss
and the checkpoint's file name). Frames without any segmented voxel are omitted (highdicom's default).
Read back with :func:`segbalance.io.dicom_labels.read_dicom_label` and the same label map,
the label volume is voxel-exact.

De-identification: the DICOM-SEG must carry the Patient and General Study modules of its source, so
``PatientName``, ``PatientID``, ``PatientBirthDate``, ``PatientSex``, ``StudyInstanceUID``, ``StudyDate``,
``StudyTime``, ``StudyID`` and the ``FrameOfReferenceUID`` are copied; ``ReferringPhysicianName`` and
``AccessionNumber`` (Type 2) are written empty. Anything else highdicom copies from the source
(``PatientAge``, ``PatientWeight``, ``StudyDescription``, ...) is removed, and no other source attribute
(``InstitutionName``, ``OperatorsName``, ``StationName``, ...) is ever copied (tested).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segbalance.atomic import atomic_write
from segbalance.extras import require
from segbalance.labels import present_labels

require("pydicom", "highdicom", needed_for="DICOM-SEG output (export-seg, predict --format dicom-seg)")

from segbalance.io.dicom_common import COLOURS, COPIED_TAGS  # noqa: E402

__all__ = ["write_dicom_seg", "KEPT_SOURCE_TAGS"]

# attributes of the source series a written DICOM-SEG keeps (required by the standard): the RTSTRUCT
# writer's COPIED_TAGS plus the UIDs
KEPT_SOURCE_TAGS = ("StudyInstanceUID", "FrameOfReferenceUID") + COPIED_TAGS
_EMPTIED = ("ReferringPhysicianName", "AccessionNumber")
_STRUCTURAL = {"SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "SpecificCharacterSet",
               "PositionReferenceIndicator", "Modality", "BitsAllocated", "BitsStored", "HighBit",
               "PixelRepresentation", "ImageType", "PatientOrientation"}
_VALUE_VRS = {"PN", "LO", "SH", "LT", "ST", "UT", "AS", "DA", "TM", "DS", "IS", "CS", "AE", "UC"}
_LESION_WORDS = ("lesion", "tumor", "tumour", "gtv", "ctv", "nodule", "cancer", "metasta", "neoplasm")


def _codes(name: str):
    from pydicom.sr.codedict import codes

    if any(w in name.lower() for w in _LESION_WORDS):
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm
    return codes.SCT.Tissue, codes.SCT.Tissue


def _deidentify(seg, source) -> None:
    """Drop what highdicom copied from ``source`` beyond :data:`KEPT_SOURCE_TAGS`; empty the Type 2 rest."""
    for keyword in _EMPTIED:
        setattr(seg, keyword, "")
    for element in list(seg):
        kw = element.keyword
        if not kw or kw in KEPT_SOURCE_TAGS or kw in _STRUCTURAL or kw in _EMPTIED or kw not in source:
            continue
        if element.VR in _VALUE_VRS and source[kw].value == element.value and element.value not in ("", None):
            del seg[kw]


def write_dicom_seg(
    labels: np.ndarray,
    image_folder: str | os.PathLike,
    path: str | os.PathLike,
    *,
    label_map: dict[int, str] | None = None,
    series_uid: str | None = None,
    parameters: dict[str, str] | None = None,
    series_description: str = "segbalance segmentation",
    headers: list | None = None,
) -> Path:
    """Write a label volume ``(z, y, x)`` on the DICOM series in ``image_folder`` as a DICOM-SEG file.

    Args:
        labels: integer label map on the series' grid (array order of :func:`read_dicom_series`).
        image_folder: the source series (several series: pick one with ``series_uid``).
        path: output ``.dcm`` (written atomically).
        label_map: ``{value: name}``; every non-zero value of ``labels`` must be in it. Default: the values
            present, named ``label_<v>``.
        parameters: algorithm parameters recorded in every segment (e.g. ``{"loss": "dfl"}``).
        headers: the series' headers (:func:`read_series_headers`), when already read.

    Raises:
        ValueError: shape differs from the series, negative or non-integer labels, a value missing from the
            label map, not a DICOM series.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from segbalance import __version__
    from segbalance.io.dicom import read_series_headers

    folder = Path(image_folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: DICOM-SEG needs the source DICOM series folder, not a file")
    headers = headers if headers is not None else read_series_headers(folder, series_uid)
    shape = (len(headers), int(headers[0].Rows), int(headers[0].Columns))
    for h in headers:  # in-memory headers only: Type 2 attributes highdicom needs, empty when absent
        for keyword in COPIED_TAGS + _EMPTIED:
            if keyword not in h:
                setattr(h, keyword, "")
    labels = np.asarray(labels)
    if labels.shape != shape:
        raise ValueError(f"labels of shape {labels.shape} do not match the series {folder} ({shape} = "
                         "slices, rows, columns)")
    indices = labels.astype(np.int64)
    if indices.size and (indices.min() < 0 or not np.array_equal(indices, labels)):
        raise ValueError(f"{path}: labels must be non-negative integers, got dtype {labels.dtype} with "
                         f"values from {labels.min()} to {labels.max()}")
    present = [int(v) for v in present_labels(indices) if v != 0]
    if label_map:
        names = {int(v): str(n) for v, n in label_map.items() if int(v) != 0}
        unknown = [v for v in present if v not in names]
        if unknown:
            raise ValueError(f"{path}: label values {unknown} are not in the label map {names}")
    else:
        names = {v: f"label_{v}" for v in present} or {1: "label_1"}
    values = sorted(names)
    lut = np.zeros(max(max(values), int(indices.max(initial=0))) + 1, dtype=np.uint16)
    for number, value in enumerate(values, start=1):
        lut[value] = number
    pixels = lut[indices]
    pixels = pixels.astype(np.uint8 if len(values) < 256 else np.uint16)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="segbalance", family=codes.cid7162.ArtificialIntelligence, version=__version__,
        parameters={k: str(v) for k, v in (parameters or {}).items()} or None,
    )
    descriptions = []
    for number, value in enumerate(values, start=1):
        category, kind = _codes(names[value])
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=names[value][:64], segmented_property_category=category,
            segmented_property_type=kind, algorithm_type="AUTOMATIC", algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*COLOURS[(value - 1) % len(COLOURS)]),
        ))
    seg = hd.seg.Segmentation(
        source_images=headers, pixel_array=pixels, segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="segbalance",
        manufacturer_model_name="segbalance", software_versions=__version__, device_serial_number="0",
        content_label="SEGBALANCE", content_description=series_description[:64],
        omit_empty_frames=bool(pixels.any()),  # highdicom needs one frame: an empty one keeps them all
    )
    seg.SeriesDescription = series_description[:64]
    _deidentify(seg, headers[0])
    path = Path(path)
    with atomic_write(path) as tmp:
        seg.save_as(tmp)
    return path
