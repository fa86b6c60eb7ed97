"""DICOM-SEG out: highdicom Segmentation referencing the source series, exact read-back, no extra PHI."""

from __future__ import annotations

import os

import highdicom as hd
import numpy as np
import pydicom
import pytest
from test_dicom_labels import lesion_crop, make_dicom_case

import segbalance
from segbalance.io.dicom_labels import read_dicom_label
from segbalance.io.dicom_seg import KEPT_SOURCE_TAGS, write_dicom_seg
from segbalance.io.rtstruct import write_rtstruct
from segbalance.io.volumes import write_volume

PHI = {
    "PatientName": "Doe^Jane", "PatientID": "MRN-12345", "PatientBirthDate": "19700101", "PatientSex": "F",
    "PatientAge": "055Y", "PatientWeight": "71", "PatientAddress": "1 Main St", "OtherPatientIDs": "X-9",
    "InstitutionName": "St Mary Hospital", "InstitutionAddress": "2 High St", "StationName": "CT01",
    "ReferringPhysicianName": "Who^Doctor", "OperatorsName": "Op^Erator", "PerformingPhysicianName": "Perf^P",
    "AccessionNumber": "ACC-777", "StudyDescription": "Chest staging", "SeriesDescription": "Lung 5mm",
    "StudyDate": "20200101", "StudyTime": "101010", "StudyID": "S-1", "DeviceSerialNumber": "SN-42",
    "InstitutionalDepartmentName": "Radiology",
}


@pytest.fixture
def case(tmp_path):
    image, masks = make_dicom_case("lung1", tmp_path, crop=lesion_crop("lung1", (48, 80, 80)),
                                   name="series", extra_tags=PHI)
    labels = np.where(masks["GTV"], 2, np.where(masks["Body"], 1, 0)).astype(np.uint8)
    return image, labels, tmp_path


def test_segmentation_references_source_and_reads_back(case):
    image, labels, tmp = case
    out = write_dicom_seg(labels, tmp / "series", tmp / "out" / "seg.dcm", label_map={1: "Body", 2: "GTV"},
                          parameters={"loss": "dfl", "checkpoint": "last.pt"})
    seg = hd.seg.segread(out)  # highdicom reads it
    assert seg.SegmentationType == "BINARY"
    src = pydicom.dcmread(next((tmp / "series").iterdir()), stop_before_pixels=True)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert seg.StudyInstanceUID == src.StudyInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Body", "GTV"]
    algo = seg.SegmentSequence[1].SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "segbalance" and algo.AlgorithmVersion == segbalance.__version__
    assert "dfl" in str(algo.AlgorithmParameters) and "last.pt" in str(algo.AlgorithmParameters)
    assert seg.SegmentSequence[0].RecommendedDisplayCIELabValue != seg.SegmentSequence[1] \
        .RecommendedDisplayCIELabValue
    assert pydicom.dcmread(out).pixel_array.ndim == 3  # plain pydicom reads the frames
    np.testing.assert_array_equal(read_dicom_label(out, image, {1: "body", 2: "gtv"}).array, labels)
    # highdicom's own reader agrees voxel for voxel on the source-instance order
    uids = [pydicom.dcmread(p, stop_before_pixels=True) for p in (tmp / "series").iterdir()]
    order = sorted(uids, key=lambda d: float(np.dot(d.ImagePositionPatient, np.cross(
        np.asarray(d.ImageOrientationPatient[:3], float), np.asarray(d.ImageOrientationPatient[3:], float)))))
    pixels = seg.get_pixels_by_source_instance(
        [d.SOPInstanceUID for d in order], combine_segments=True, relabel=False,
        ignore_spatial_locations=True, skip_overlap_checks=True,
    )
    np.testing.assert_array_equal(pixels, labels)


def test_no_identifying_tags_beyond_the_required(case):
    _, labels, tmp = case
    out = write_dicom_seg(labels, tmp / "series", tmp / "seg.dcm", label_map={1: "Body", 2: "GTV"})
    seg = pydicom.dcmread(out)
    for keyword in ("InstitutionName", "InstitutionAddress", "StationName", "OperatorsName",
                    "PerformingPhysicianName", "PatientAddress", "OtherPatientIDs", "PatientAge",
                    "PatientWeight", "StudyDescription", "InstitutionalDepartmentName"):
        assert keyword not in seg, keyword
    assert seg.ReferringPhysicianName == "" and seg.AccessionNumber == ""  # Type 2: present, empty
    assert seg.SeriesDescription != PHI["SeriesDescription"] and seg.DeviceSerialNumber != "SN-42"
    # what is copied is the patient/study identification DICOM-SEG requires, listed in KEPT_SOURCE_TAGS
    src = pydicom.dcmread(next((tmp / "series").iterdir()), stop_before_pixels=True)
    copied = {e.keyword for e in seg if e.keyword in src and e.value == src[e.keyword].value and e.value}
    structural = {"SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "Modality"}
    assert copied - structural <= set(KEPT_SOURCE_TAGS), copied - structural - set(KEPT_SOURCE_TAGS)
    assert seg.PatientName == "Doe^Jane" and seg.PatientID == "MRN-12345"


def test_empty_prediction_and_unknown_value(case):
    image, labels, tmp = case
    empty = np.zeros_like(labels)
    out = write_dicom_seg(empty, tmp / "series", tmp / "empty.dcm", label_map={1: "GTV"})
    assert not read_dicom_label(out, image, {1: "GTV"}).array.any()
    with pytest.raises(ValueError, match=r"label values \[2\] are not in the label map"):
        write_dicom_seg(labels, tmp / "series", tmp / "bad.dcm", label_map={1: "Body"})
    with pytest.raises(ValueError, match=r"do not match the series .*series"):
        write_dicom_seg(labels[:, :-1], tmp / "series", tmp / "bad.dcm")
    # a negative value would index the segment table from its end: refused, not silently mislabelled
    with pytest.raises(ValueError, match=r"bad\.dcm: labels must be non-negative integers"):
        write_dicom_seg(labels.astype(np.int16) - 1, tmp / "series", tmp / "bad.dcm")
    with pytest.raises(ValueError, match=r"labels must be non-negative integers, got dtype float"):
        write_dicom_seg(labels + 0.5, tmp / "series", tmp / "bad.dcm")
    assert not (tmp / "bad.dcm").exists()


def test_export_seg_command_from_nifti_predictions(case, capsys):
    from segbalance.cli import main

    image, labels, tmp = case
    (tmp / "dicom").mkdir()
    (tmp / "series").rename(tmp / "dicom" / "lungcase")
    write_volume(image.with_array(labels), tmp / "pred" / "lungcase.nii.gz")
    rc = main(["export-seg", str(tmp / "pred"), str(tmp / "dicom"), str(tmp / "seg"), "--label-map",
               "1=Body,2=GTV"])
    assert rc == 0
    image.path = tmp / "dicom" / "lungcase"
    back = read_dicom_label(tmp / "seg" / "lungcase.dcm", image, {1: "Body", 2: "GTV"})
    np.testing.assert_array_equal(back.array, labels)
    # a prediction on another grid is refused, naming the prediction and the series
    shifted = image.with_array(labels)
    shifted.origin = tuple(np.asarray(image.origin) + 3.0)
    write_volume(shifted, tmp / "pred2" / "lungcase.nii.gz")
    rc = main(["export-seg", str(tmp / "pred2"), str(tmp / "dicom"), str(tmp / "seg2")])
    err = capsys.readouterr().err
    assert rc == 1 and "pred2/lungcase.nii.gz: origin" in err and "differs from lungcase's" in err


def test_export_seg_rerun_redoes_a_changed_prediction_and_keeps_foreign_files(case):
    from segbalance.training.export_seg import export_seg_folder

    image, labels, tmp = case
    (tmp / "dicom").mkdir()
    (tmp / "series").rename(tmp / "dicom" / "lungcase")
    (tmp / "dicom" / "other").mkdir()
    pred = tmp / "pred" / "lungcase.nii.gz"
    write_volume(image.with_array(labels), pred)
    lmap = {1: "Body", 2: "GTV"}
    first = export_seg_folder(tmp / "pred", tmp / "dicom", tmp / "seg", label_map=lmap)
    assert [p.name for p in first.written] == ["lungcase.dcm"] and not first.failed
    again = export_seg_folder(tmp / "pred", tmp / "dicom", tmp / "seg", label_map=lmap)
    assert [p.name for p in again.skipped] == ["lungcase.dcm"] and not again.written
    # a new prediction (nnU-Net re-run) must not leave the stale DICOM-SEG in place
    changed = np.where(labels == 2, 1, labels).astype(np.uint8)
    write_volume(image.with_array(changed), pred)
    st = pred.stat()
    os.utime(pred, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    redo = export_seg_folder(tmp / "pred", tmp / "dicom", tmp / "seg", label_map=lmap)
    assert [p.name for p in redo.written] == ["lungcase.dcm"]
    image.path = tmp / "dicom" / "lungcase"
    np.testing.assert_array_equal(read_dicom_label(tmp / "seg" / "lungcase.dcm", image, lmap).array, changed)
    # a file this command did not write is never replaced without overwrite
    foreign = tmp / "seg2" / "lungcase.dcm"
    foreign.parent.mkdir()
    foreign.write_bytes(b"not ours")
    kept = export_seg_folder(tmp / "pred", tmp / "dicom", tmp / "seg2", label_map=lmap)
    assert [p.name for p in kept.skipped] == ["lungcase.dcm"] and foreign.read_bytes() == b"not ours"


def test_rtstruct_copies_no_identifying_tags_beyond_the_required(case):
    _, labels, tmp = case
    rt = pydicom.dcmread(write_rtstruct({"GTV": labels == 2}, tmp / "series", tmp / "rt.dcm"))
    src = pydicom.dcmread(next((tmp / "series").iterdir()), stop_before_pixels=True)
    copied = {e.keyword for e in rt if e.keyword in src and e.value == src[e.keyword].value and e.value}
    assert copied <= set(KEPT_SOURCE_TAGS), copied
    assert rt.ReferringPhysicianName == "" and rt.AccessionNumber == "" and "InstitutionName" not in rt
    assert rt.PatientID == "MRN-12345"
