"""``segbalance predict``: geometry kept, resume, I/O threads, errors; the hospital round trip (slow)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from test_dicom_labels import dice, lesion_crop, make_dicom_case, real_dir

from segbalance.io.volume import Volume
from segbalance.io.volumes import read_volume, write_volume
from segbalance.training import TrainConfig, load_model, train
from segbalance.training.predict import find_inputs, predict_folder, predict_volume

TINY = {"dim": 3, "size": (8, 32, 32), "channels": (4, 8), "epochs": 1, "steps_per_epoch": 1, "batch_size": 2,
        "samples_per_volume": 2, "progress": False, "device": "cpu"}


def _crop_case(dst: Path, name: str, case: str = "lung1", crop=None):
    crop = crop or lesion_crop(case, (16, 64, 64))
    image = read_volume(real_dir() / f"{case}_image.nrrd")
    label = read_volume(real_dir() / f"{case}_label.nrrd")
    z, y, x = (s.start or 0 for s in crop)
    origin = tuple(np.asarray(image.origin) + image.direction_matrix @ (np.array([x, y, z]) *
                                                                        np.array(image.spacing[::-1])))
    img = Volume(image.array[crop], image.spacing, origin, image.direction)
    write_volume(img, dst / "images" / f"{name}.nrrd")
    write_volume(img.with_array(label.array[crop].astype(np.uint8)), dst / "labels" / f"{name}.nrrd")
    return img


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    _crop_case(root / "data", "lung")
    return train(TrainConfig(out=str(root / "run"), data=str(root / "data"), **TINY))


def test_predict_folder_keeps_geometry_resumes_and_threads(checkpoint, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    nrrd = _crop_case(tmp_path / "tmp", "a")
    write_volume(nrrd, src / "a_0000.nrrd")  # channel suffix dropped from the output name
    dicom, _ = make_dicom_case("lung1", src, crop=lesion_crop("lung1", (12, 64, 60), (2, 5, -3)), name="b")
    report = predict_folder(checkpoint, src, tmp_path / "out", jobs=2, progress=False)
    assert not report.failed and sorted(p.name for p in report.written) == ["a.nii.gz", "b.nii.gz"]
    model, info = load_model(checkpoint)
    for name, vol in (("a", nrrd), ("b", dicom)):
        pred = read_volume(tmp_path / "out" / f"{name}.nii.gz")
        assert pred.shape == vol.shape
        np.testing.assert_allclose(pred.spacing, vol.spacing, rtol=1e-5)
        np.testing.assert_allclose(pred.origin, vol.origin, atol=1e-3)
        np.testing.assert_allclose(pred.direction, vol.direction, atol=1e-5)
        np.testing.assert_array_equal(pred.array, predict_volume(model, info, vol.array, batch_size=4))
    # a re-run skips both; a changed checkpoint (mtime) predicts again; -j 0 gives the same files
    again = predict_folder(checkpoint, src, tmp_path / "out", jobs=2, progress=False)
    assert len(again.skipped) == 2 and not again.written
    st = checkpoint.stat()
    os.utime(checkpoint, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    serial = predict_folder(checkpoint, src, tmp_path / "out", jobs=0, progress=False)
    assert len(serial.written) == 2
    np.testing.assert_array_equal(read_volume(tmp_path / "out" / "b.nii.gz").array,
                                  predict_volume(model, info, dicom.array, batch_size=4))


def test_predict_command_errors(checkpoint, tmp_path, capsys):
    from segbalance.cli import main

    src = tmp_path / "in"
    _crop_case(tmp_path, "a")
    (tmp_path / "images").rename(src)
    rc = main(["predict", str(tmp_path / "missing.pt"), str(src), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "missing.pt: checkpoint does not exist" in err
    rc = main(["predict", str(checkpoint), str(src), str(tmp_path / "out"), "--format", "dicom-seg"])
    err = capsys.readouterr().err
    assert rc == 2 and "a.nrrd: --format dicom-seg needs DICOM series inputs" in err
    (src / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    rc = main(["predict", str(checkpoint), str(src), str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "broken: " in err and "broken.nii.gz" in err
    assert (tmp_path / "out" / "a.nii.gz").is_file()
    rc = main(["predict", str(checkpoint), str(src), str(src / "pred")])
    assert rc == 2 and "must not be inside the input" in capsys.readouterr().err


def test_dataset_root_predicts_its_test_cases(tmp_path):
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (tmp_path / sub).mkdir()
    vol = Volume(np.zeros((4, 8, 8), np.int16), (1, 1, 1))
    write_volume(vol, tmp_path / "imagesTr" / "c1_0000.nii.gz")
    write_volume(vol, tmp_path / "labelsTr" / "c1.nii.gz")
    write_volume(vol, tmp_path / "imagesTs" / "t7_0000.nii.gz")
    assert find_inputs(tmp_path) == [("t7", tmp_path / "imagesTs" / "t7_0000.nii.gz")]


def test_a_single_series_is_named_after_its_case_and_never_overwrites_another(checkpoint, tmp_path):
    """The issue's case: ``predict SERIES/ OUT`` named the output after the folder (``series``)."""
    from segbalance.io.naming import case_output_name

    crop = lesion_crop("lung1", (8, 40, 40))
    tags = {"PatientID": "P 0042", "StudyDate": "20260312", "SeriesDescription": "CT Thorax/1.0"}
    make_dicom_case("lung1", tmp_path / "a", crop=crop, name="series", extra_tags=tags)
    make_dicom_case("lung1", tmp_path / "b", crop=crop, name="series", extra_tags=tags)  # same case name
    assert case_output_name(tmp_path / "a" / "series") == "P_0042_20260312_CT_Thorax_1.0"
    first = predict_folder(checkpoint, tmp_path / "a" / "series", tmp_path / "out", progress=False)
    assert [p.name for p in first.written] == ["P_0042_20260312_CT_Thorax_1.0.nii.gz"]
    before = first.written[0].read_bytes()
    again = predict_folder(checkpoint, tmp_path / "a" / "series", tmp_path / "out", progress=False)
    assert again.skipped == first.written and not again.written
    other = predict_folder(checkpoint, tmp_path / "b" / "series", tmp_path / "out", progress=False)
    (written,) = other.written
    import pydicom

    uid = pydicom.dcmread(next((tmp_path / "b" / "series").iterdir())).SeriesInstanceUID
    assert written.name == f"P_0042_20260312_CT_Thorax_1.0_{uid}.nii.gz"
    assert first.written[0].read_bytes() == before  # the other case's file is untouched
    make_dicom_case("lung1", tmp_path / "c", crop=crop, name="series", extra_tags={"PatientID": ""})
    anonymous = pydicom.dcmread(next((tmp_path / "c" / "series").iterdir())).SeriesInstanceUID
    assert case_output_name(tmp_path / "c" / "series") == anonymous


@pytest.mark.slow
def test_hospital_round_trip_rtstruct_to_dicom_seg(tmp_path):
    """DICOM series + RTSTRUCT/SEG -> convert nnunet -> train (tiny) -> predict --format dicom-seg ->
    read back -> evaluate against the original masks."""
    from segbalance.cli import main
    from segbalance.evaluation.metrics import evaluate_case
    from segbalance.io.dicom_labels import read_dicom_label
    from segbalance.io.rtstruct import write_rtstruct

    src = tmp_path / "hospital"
    (src / "labels").mkdir(parents=True)
    originals = {}
    for name, crop in (("p1", lesion_crop("lung1", (16, 64, 64))),
                       ("p2", lesion_crop("lung1", (16, 64, 64), (3, -10, 8)))):
        image, masks = make_dicom_case("lung1", src / "images", crop=crop, name=name)
        write_rtstruct({"GTV": masks["GTV"], "Body": masks["Body"]}, src / "images" / name,
                       src / "labels" / f"{name}.dcm")
        originals[name] = (image, masks)
    assert main(["convert", "nnunet", str(src), str(tmp_path / "raw"), "--dataset-id", "5", "--name", "Hosp",
                 "--label-map", "0=background,1=Body,2=GTV", "--no-progress"]) == 0
    ckpt = train(TrainConfig(out=str(tmp_path / "run"), data=str(tmp_path / "raw" / "Dataset005_Hosp"),
                             **TINY))
    assert main(["predict", str(ckpt), str(src / "images"), str(tmp_path / "seg"), "--format", "dicom-seg",
                 "--label-map", "1=Body,2=GTV", "--no-progress"]) == 0
    assert main(["predict", str(ckpt), str(src / "images"), str(tmp_path / "nii"), "--no-progress"]) == 0
    assert main(["predict", str(ckpt), str(src / "images"), str(tmp_path / "rt"), "--format", "rtstruct",
                 "--label-map", "1=Body,2=GTV", "--no-progress"]) == 0
    for name, (image, masks) in originals.items():
        seg = read_dicom_label(tmp_path / "seg" / f"{name}.dcm", image, {1: "body", 2: "gtv"})
        nii = read_volume(tmp_path / "nii" / f"{name}.nii.gz")
        np.testing.assert_array_equal(seg.array, nii.array)  # DICOM-SEG == NIfTI prediction, voxel-exact
        rt = read_dicom_label(tmp_path / "rt" / f"{name}.dcm", image, {1: "Body", 2: "GTV"})
        np.testing.assert_array_equal(rt.array, nii.array)  # RTSTRUCT contours rasterize back exactly
        gt = np.where(masks["GTV"], 2, np.where(masks["Body"], 1, 0))
        metrics = evaluate_case(seg.array, gt, spacing=image.spacing, labels=[1, 2])
        assert [m.label for m in metrics] == [1, 2]
        assert [m.gt_voxels for m in metrics] == [int((gt == 1).sum()), int(masks["GTV"].sum())] and \
            metrics[1].gt_voxels > 0
        for m in metrics:  # the scores are those of the read-back DICOM-SEG against the original masks
            assert m.dice == pytest.approx(dice(seg.array == m.label, gt == m.label), abs=1e-6)


def test_resume_fingerprint_covers_an_mhd_data_file(tmp_path):
    """A changed ``.raw`` behind an unchanged ``.mhd`` header must not keep a stale prediction."""
    from segbalance.training.predict import _fingerprint

    path = write_volume(Volume(np.zeros((2, 3, 4), np.int16), (1, 1, 1)), tmp_path / "a.mhd", compress=False)
    raw = tmp_path / "a.raw"
    before = _fingerprint(path)
    st = raw.stat()
    os.utime(raw, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _fingerprint(path) != before
    raw.unlink()
    assert _fingerprint(path)[0] == "<unreadable>"
