"""Converters and the ``segbalance convert`` command: nnU-Net datasets, slices, patches, checks, resume."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segbalance.cli import main
from segbalance.errors import UserError
from segbalance.io.dicom import write_dicom_series
from segbalance.io.volume import Volume
from segbalance.io.volumes import read_volume, write_volume
from segbalance.preprocessing.nnunet import convert_to_nnunet, parse_label_map
from segbalance.preprocessing.pairing import CaseError, check_geometry, check_label, find_cases
from segbalance.preprocessing.patches import convert_to_patches, grid_starts
from segbalance.preprocessing.runs import OutputFolder
from segbalance.preprocessing.slices import Window, convert_to_slices, window_intensities

SHAPE = (6, 20, 24)
SPACING = (3.0, 0.9, 0.8)


def make_case(seed: int, label_values=(1, 2)) -> tuple[Volume, Volume]:
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SHAPE)
    organ = ((y - 10) / 7) ** 2 + ((x - 12) / 8) ** 2 < 1
    image = np.where(organ, 60.0, -900.0) + rng.normal(0, 5, SHAPE)
    label = np.zeros(SHAPE, np.uint8)
    label[organ] = label_values[0]
    label[3, 10, 12 + seed % 3] = label_values[1]  # one-voxel lesion
    geom = dict(spacing=SPACING, origin=(1.0, -2.0, 3.0 + seed))
    return Volume(image.astype(np.float32), **geom), Volume(label, **geom)


def make_source(root: Path, n: int = 3, ext: str = ".mhd", label_values=(1, 2)) -> Path:
    for i in range(n):
        image, label = make_case(i, label_values)
        write_volume(image, root / "images" / f"case{i}{ext}")
        write_volume(label, root / "labels" / f"case{i}{ext}")
    return root


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(argv: list[str]) -> int:
    """``segbalance convert <argv> --no-progress`` through the real entry point."""
    return main(["convert", *argv, "--no-progress"])


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ---------------------------------------------------------------- pairing and checks

def test_find_cases_pairs_by_case_id_and_dicom_folders(tmp_path):
    src = make_source(tmp_path / "src", n=2, ext=".nii.gz")
    image, _ = make_case(5)
    write_dicom_series(image, src / "images" / "case5")  # a DICOM series as a sub-folder, no label
    cases = find_cases(src)
    assert [c.case_id for c in cases] == ["case0", "case1", "case5"]
    assert [c.split for c in cases] == ["train", "train", "test"]
    assert cases[0].label.name == "case0.nii.gz" and cases[2].images[0].is_dir()


def test_label_without_image_is_an_error(tmp_path):
    src = make_source(tmp_path / "src", n=1)
    write_volume(make_case(1)[1], src / "labels" / "stray.mhd")
    with pytest.raises(CaseError, match="labels without an image: stray"):
        find_cases(src)


def test_geometry_mismatch_messages_name_file_and_property():
    image, label = make_case(0)
    label.path = Path("lab.nii.gz")
    check_geometry(image, label)  # identical: fine
    for change, what in [(dict(spacing=(3.0, 0.9, 0.81)), "spacing"),
                         (dict(origin=(1.0, -2.0, 3.1)), "origin"),
                         (dict(direction=(1, 0, 0, 0, 0, 1, 0, 1, 0)), "direction")]:
        other = Volume(label.array, **{**dict(spacing=label.spacing, origin=label.origin), **change},
                       path=Path("lab.nii.gz"))
        with pytest.raises(CaseError, match=f"lab.nii.gz: {what}"):
            check_geometry(image, other)
    small = Volume(label.array[:, :10], spacing=SPACING, origin=label.origin, path=Path("lab.nii.gz"))
    with pytest.raises(CaseError, match=r"lab.nii.gz: shape \(6, 10, 24\) differs"):
        check_geometry(image, small)
    # within tolerance: spacing differing by 1e-6 relative passes
    close = Volume(label.array, spacing=tuple(s * (1 + 1e-6) for s in SPACING), origin=label.origin)
    check_geometry(image, close)


def test_label_checks():
    lab = Volume(np.array([[[0.0, 1.0], [2.0, 0.5]]]), (1, 1, 1), path=Path("seg.nrrd"))
    with pytest.raises(CaseError, match=r"seg.nrrd: label has non-integer values \(e.g. 0.5\)"):
        check_label(lab)
    lab = Volume(np.array([[[0, 1], [2, 7]]], np.int16), (1, 1, 1), path=Path("seg.nrrd"))
    with pytest.raises(CaseError, match=r"label values \[7\] are not among the known labels \[0, 1, 2\]"):
        check_label(lab, {0, 1, 2})
    assert check_label(Volume(np.array([[[0.0, 2.0]]]), (1, 1, 1))).dtype.kind == "i"


def test_parse_label_map():
    assert parse_label_map("0=background, 1=organ,255=lesion") == {0: "background", 1: "organ", 255: "lesion"}
    with pytest.raises(ValueError, match="must name the background value 0"):
        parse_label_map("1=organ")
    with pytest.raises(ValueError, match="'x' in 'x=organ' is not an integer"):
        parse_label_map("0=bg,x=organ")


# ---------------------------------------------------------------- nnU-Net

def test_nnunet_export_from_mhd_passes_nnunet_integrity_check(tmp_path, monkeypatch):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    src = make_source(tmp_path / "src", n=2, label_values=(1, 255))  # 255 must be remapped to 2
    write_volume(make_case(7)[0], src / "images" / "case7.mhd")  # unlabeled -> imagesTs
    before = tree_digest(src)
    raw = tmp_path / "nnUNet_raw"
    report = convert_to_nnunet(src, raw, 12, "Phantom", label_map="0=background,1=organ,255=lesion",
                               progress=False)
    assert not report.failed, report.summary()
    ds = raw / "Dataset012_Phantom"
    assert sorted(p.name for p in (ds / "imagesTr").iterdir()) == ["case0_0000.nii.gz", "case1_0000.nii.gz"]
    assert [p.name for p in (ds / "imagesTs").iterdir()] == ["case7_0000.nii.gz"]
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "organ": 1, "lesion": 2}
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    assert meta["channel_names"] == {"0": "CT"}
    # geometry and values survive; 255 -> 2
    img_src, lab_src = read_volume(src / "images/case1.mhd"), read_volume(src / "labels/case1.mhd")
    img, lab = read_volume(ds / "imagesTr/case1_0000.nii.gz"), read_volume(ds / "labelsTr/case1.nii.gz")
    np.testing.assert_array_equal(img.array, img_src.array)
    np.testing.assert_allclose(img.origin, img_src.origin, atol=1e-4)
    np.testing.assert_array_equal(lab.array, np.where(lab_src.array == 255, 2, lab_src.array))
    monkeypatch.setenv("nnUNet_raw", str(raw))
    verify_dataset_integrity(str(ds), num_processes=1)  # raises on any problem
    assert tree_digest(src) == before, "the source was modified"


def test_nnunet_without_label_map_needs_consecutive_values(tmp_path):
    src = make_source(tmp_path / "src", n=1, label_values=(1, 3))
    with pytest.raises(ValueError, match=r"label values \[0, 1, 3\] are not consecutive.*--label-map"):
        convert_to_nnunet(src, tmp_path / "raw", 1, "X", progress=False)


# ---------------------------------------------------------------- slices

def test_window_maps_center_and_width_to_unit_range():
    out = window_intensities(np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0]), Window(40, 400))
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])


def test_window_equals_monai_scale_intensity_range():
    mt = pytest.importorskip("monai.transforms")
    hu = np.random.default_rng(0).normal(-300, 600, (3, 16, 16)).astype(np.float32)
    window = Window(-600, 1500)
    lo, hi = window.bounds(hu)
    theirs = mt.ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)(hu)
    np.testing.assert_allclose(window_intensities(hu, window), np.asarray(theirs), atol=1e-7)


def test_slices_png_counts_manifest_and_nearest_labels(tmp_path):
    src = make_source(tmp_path / "src", n=2)
    report = convert_to_slices(src, tmp_path / "out", size=(32, 48), window="40,400", progress=False)
    assert not report.failed
    rows = list(csv.DictReader(open(tmp_path / "out" / "manifest.csv")))
    assert len(rows) == 2 * SHAPE[0]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())[0]["case"] == "case0"
    lab = np.asarray(Image.open(tmp_path / "out" / "labels" / "case0_0003.png"))
    img = np.asarray(Image.open(tmp_path / "out" / "images" / "case0_0003.png"))
    assert lab.shape == img.shape == (32, 48) and img.dtype == np.uint8
    assert set(np.unique(lab)) <= {0, 1, 2}  # nearest neighbour: no blended label values
    row = next(r for r in rows if r["case"] == "case0" and r["slice_index"] == "3")
    assert [int(row[f"count_{k}"]) for k in range(3)] == np.bincount(lab.ravel(), minlength=3).tolist()
    assert float(row["spacing_row"]) == pytest.approx(0.9 * 20 / 32)
    assert float(row["spacing_col"]) == pytest.approx(0.8 * 24 / 48)


def test_slices_foreground_only_npz_sagittal(tmp_path):
    src = make_source(tmp_path / "src", n=1)
    label = read_volume(src / "labels" / "case0.mhd").array
    report = convert_to_slices(src, tmp_path / "out", axis="sagittal", size=None, window="p1,99", fmt="npz",
                               foreground_only=True, progress=False)
    expected = [i for i in range(SHAPE[2]) if label[:, :, i].any()]
    assert [r["slice_index"] for r in report.rows()] == expected
    with np.load(tmp_path / "out" / "slices" / f"case0_{expected[0]:04d}.npz") as z:
        np.testing.assert_array_equal(z["label"], label[:, :, expected[0]])
        assert z["image"].dtype == np.float32 and 0 <= z["image"].min() and z["image"].max() <= 1


# ---------------------------------------------------------------- patches

def test_grid_starts_cover_every_voxel():
    assert grid_starts(10, 4, 0.0) == [0, 4, 6]
    assert grid_starts(10, 4, 0.5) == [0, 2, 4, 6]
    assert grid_starts(3, 4, 0.5) == [0]


def test_grid_patches_count_and_content(tmp_path):
    src = make_source(tmp_path / "src", n=1)
    report = convert_to_patches(src, tmp_path / "out", patch_size=(4, 16, 16), mode="grid", overlap=0.5,
                                progress=False)
    # z: 6 -> [0, 2]; y: 20 -> [0, 4]; x: 24 -> [0, 8] (stride 8 reaches 24-16=8)
    assert len(report.rows()) == 2 * 2 * 2
    image = read_volume(src / "images" / "case0.mhd").array
    row = report.rows()[-1]
    with np.load(tmp_path / "out" / row["file"]) as z:
        s = (row["start_z"], row["start_y"], row["start_x"])
        assert s == (2, 4, 8)
        np.testing.assert_array_equal(z["image"][0], image[2:6, 4:20, 8:24])


def test_random_patches_foreground_share_reaches_the_one_voxel_lesion(tmp_path):
    src = make_source(tmp_path / "src", n=1)
    report = convert_to_patches(src, tmp_path / "out", patch_size=(2, 8, 8), n_patches=20, fg_share=0.5,
                                seed=1, progress=False)
    rows = report.rows()
    assert len(rows) == 20
    fg = [r for r in rows if r["kind"].startswith("fg:")]
    assert len(fg) == 10
    for r in fg:  # a patch centred on class c contains c
        assert r[f"count_{r['kind'][3:]}"] > 0
    assert any(r["kind"] == "fg:2" for r in fg)  # the single lesion voxel is sampled
    # same seed -> same patches, independent of the run
    again = convert_to_patches(src, tmp_path / "out2", patch_size=(2, 8, 8), n_patches=20, fg_share=0.5,
                               seed=1, progress=False)
    assert [r["start_y"] for r in again.rows()] == [r["start_y"] for r in rows]


# ---------------------------------------------------------------- folder runs, resume, CLI


def test_folder_run_reports_every_bad_case_and_exits_nonzero(tmp_path, capsys):
    src = make_source(tmp_path / "src", n=4)
    image, label = make_case(1)
    write_volume(Volume(label.array, spacing=SPACING, origin=(9.0, 9.0, 9.0)), src / "labels" / "case1.mhd")
    label2 = make_case(2)[1]
    write_volume(label2.with_array(label2.array.astype(np.float32) + 0.5), src / "labels" / "case2.mhd")
    write_volume(make_case(3)[1], src / "labels" / "case3.mhd", compress=False)
    (src / "labels" / "case3.raw").write_bytes(b"\0" * 10)  # truncated data file
    code = run_cli(["patches", str(src), str(tmp_path / "out"), "--mode", "grid", "--patch-size", "6,20,24"])
    err = capsys.readouterr().err
    assert code == 1
    assert "1 case(s) converted" in err and "3 failed" in err
    assert "case1.mhd: origin" in err
    assert "case2.mhd: label has non-integer values" in err
    assert "case3.raw: truncated data file" in err
    assert files(tmp_path / "out" / "patches") == ["case0_00000.npz"]  # failed cases leave no output


def test_resume_skips_finished_cases_and_refuses_foreign_or_changed_outputs(tmp_path, capsys):
    src = make_source(tmp_path / "src", n=2)
    out = tmp_path / "out"
    argv = ["slices", str(src), str(out), "--size", "16,16"]
    assert run_cli(argv) == 0
    first = out / "images" / "case0_0000.png"
    mtime = first.stat().st_mtime_ns
    (out / ".segbalance" / "done" / "case1.json").unlink()  # as if interrupted during case1
    capsys.readouterr()
    assert run_cli(argv) == 0
    assert "2 case(s) converted (1 already done)" in capsys.readouterr().out
    assert first.stat().st_mtime_ns == mtime  # case0 not rewritten
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert len(rows) == 2 * SHAPE[0]  # the manifest still lists both cases
    # other settings into the same folder: refused, nothing touched
    assert run_cli(["slices", str(src), str(out), "--size", "32,32"]) == 2
    assert "made with other settings (size)" in one_error_line(capsys)
    assert first.stat().st_mtime_ns == mtime
    # a folder we did not write: refused (and left without a .segbalance folder) unless --overwrite
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert run_cli(["slices", str(src), str(foreign)]) == 2
    line = one_error_line(capsys)
    assert f"{foreign}: destination exists and was not written by segbalance convert" in line
    assert files(foreign) == ["keep.txt"]
    assert run_cli(["slices", str(src), str(foreign), "--overwrite", "--size", "16,16"]) == 0
    assert (foreign / "keep.txt").read_text() == "mine"


def test_changed_source_case_is_redone_and_its_old_outputs_replaced(tmp_path, capsys):
    src = make_source(tmp_path / "src", n=2)
    out = tmp_path / "out"
    argv = ["slices", str(src), str(out), "--size", "16,16"]
    assert run_cli(argv) == 0
    case0 = out / "images" / "case0_0000.png"
    mtime = case0.stat().st_mtime_ns
    image, label = make_case(1)
    image.array[:] = 40.0  # new content and fewer slices: case1_0004/0005 must go
    write_volume(Volume(image.array[:4], SPACING), src / "images" / "case1.mhd")
    write_volume(Volume(label.array[:4], SPACING), src / "labels" / "case1.mhd")
    capsys.readouterr()
    assert run_cli(argv) == 0
    assert "2 case(s) converted (1 already done)" in capsys.readouterr().out
    assert case0.stat().st_mtime_ns == mtime
    expected = [f"case{c}_{i:04d}.png" for c, n in ((0, 6), (1, 4)) for i in range(n)]
    assert files(out / "images") == files(out / "labels") == expected
    new_pixels = np.asarray(Image.open(out / "images" / "case1_0000.png"))
    assert np.unique(new_pixels).tolist() == [128]  # 40 HU in the 40,400 window: 0.5 * 255, rounded
    assert len(json.loads((out / "manifest.json").read_text())) == 6 + 4
    # only the data file of an MHD changes (same size, header untouched): also noticed
    raw = src / "images" / "case0.zraw"
    os.utime(raw, ns=(raw.stat().st_atime_ns, raw.stat().st_mtime_ns + 10**9))
    assert run_cli(argv) == 0
    assert "2 case(s) converted (1 already done)" in capsys.readouterr().out
    assert case0.stat().st_mtime_ns != mtime


def test_case_removed_from_source_or_failing_now_loses_its_outputs(tmp_path, capsys):
    src = make_source(tmp_path / "src", n=3)
    out = tmp_path / "out"
    argv = ["patches", str(src), str(out), "--patch-size", "2,8,8", "--n-patches", "2"]
    assert run_cli(argv) == 0
    for ext in (".mhd", ".zraw"):
        (src / "images" / f"case2{ext}").unlink()
        (src / "labels" / f"case2{ext}").unlink()
    label = make_case(1)[1]
    write_volume(label.with_array(label.array.astype(np.float32) + 0.5), src / "labels" / "case1.mhd")
    capsys.readouterr()
    assert run_cli(argv) == 1
    assert "case1.mhd: label has non-integer values" in capsys.readouterr().err
    assert files(out / "patches") == ["case0_00000.npz", "case0_00001.npz"]
    assert sorted(p.name for p in (out / ".segbalance" / "done").iterdir()) == ["case0.json"]
    assert {r["case"] for r in json.loads((out / "manifest.json").read_text())} == {"case0"}


def test_nnunet_rerun_with_a_failing_case_drops_its_files_and_the_stale_dataset_json(tmp_path, capsys):
    src = make_source(tmp_path / "src", n=2)
    raw = tmp_path / "raw"
    argv = ["nnunet", str(src), str(raw), "--dataset-id", "3", "--name", "R"]
    assert run_cli(argv) == 0
    ds = raw / "Dataset003_R"
    label = make_case(1)[1]
    write_volume(label.with_array(label.array.astype(np.float32) + 0.5), src / "labels" / "case1.mhd")
    assert run_cli(argv) == 1
    assert "case1.mhd: label has non-integer values" in capsys.readouterr().err
    assert files(ds / "imagesTr") == ["case0_0000.nii.gz"] and files(ds / "labelsTr") == ["case0.nii.gz"]
    assert not (ds / "dataset.json").exists()


def test_other_source_into_the_same_destination_is_refused_naming_both(tmp_path, capsys):
    src_a = make_source(tmp_path / "a", n=2)
    src_b = make_source(tmp_path / "b", n=1)
    out = tmp_path / "out"
    argv = ["--patch-size", "2,8,8", "--n-patches", "3"]
    assert run_cli(["patches", str(src_a), str(out), *argv]) == 0
    before = files(out)
    capsys.readouterr()
    assert run_cli(["patches", str(src_b), str(out), *argv]) == 2
    line = one_error_line(capsys)
    assert f"holds a conversion of {src_a.resolve()}, not of {src_b.resolve()}" in line
    assert files(out) == before
    # --overwrite: the result is exactly a fresh conversion of the new source (case1 of a is gone)
    assert run_cli(["patches", str(src_b), str(out), *argv, "--overwrite"]) == 0
    assert run_cli(["patches", str(src_b), str(tmp_path / "fresh"), *argv]) == 0
    assert tree_digest(out) == tree_digest(tmp_path / "fresh")


def test_overwrite_removes_what_the_new_run_does_not_write_and_nothing_else(tmp_path):
    src = make_source(tmp_path / "src", n=2)
    out = tmp_path / "out"
    assert run_cli(["patches", str(src), str(out), "--patch-size", "2,8,8", "--n-patches", "5"]) == 0
    (out / "notes.txt").write_text("mine")  # files segbalance did not write survive --overwrite
    (out / "patches" / "mine.npz").write_bytes(b"not ours")
    argv = ["--patch-size", "2,8,8", "--n-patches", "2"]
    assert run_cli(["patches", str(src), str(out), *argv, "--overwrite"]) == 0
    assert files(out / "patches") == ["case0_00000.npz", "case0_00001.npz", "case1_00000.npz",
                                      "case1_00001.npz", "mine.npz"]
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    (out / "patches" / "mine.npz").unlink()
    assert run_cli(["patches", str(src), str(tmp_path / "fresh"), *argv]) == 0
    assert tree_digest(out) == tree_digest(tmp_path / "fresh")


def test_leftovers_of_a_killed_run_are_cleaned_and_never_count_as_done(tmp_path, capsys):
    src = make_source(tmp_path / "src", n=2)
    out = tmp_path / "out"
    argv = ["patches", str(src), str(out), "--patch-size", "2,8,8", "--n-patches", "3"]
    assert run_cli(argv) == 0
    fresh = tree_digest(out)
    # what a kill during case1 leaves: its marker not yet written, a journal (last line torn), a finished
    # patch, a temporary file and folder of our naming; plus a dot-file of the user's
    state = out / ".segbalance"
    (state / "done" / "case1.json").unlink()
    (state / "partial" / "case1.txt").write_text("patches/case1_00000.npz\npatches/case1_000")
    (out / "patches" / "case1_00002.npz").write_bytes(b"half")  # listed nowhere: rewritten anyway
    (out / "patches" / ".case1_00001.npz.k2j3.segbalance-tmp").write_bytes(b"partial")
    (out / ".x.nii.gz.abc.segbalance-tmp").mkdir()
    (out / ".x.nii.gz.abc.segbalance-tmp" / "x.nii.gz").write_bytes(b"partial")
    (out / ".user-dotfile").write_text("keep")
    capsys.readouterr()
    assert run_cli(argv) == 0
    assert "2 case(s) converted (1 already done)" in capsys.readouterr().out
    assert (out / ".user-dotfile").read_text() == "keep"
    (out / ".user-dotfile").unlink()
    assert tree_digest(out) == fresh


def test_a_second_writer_to_the_same_destination_is_refused(tmp_path):
    with OutputFolder(tmp_path / "out", {"converter": "x"}, source=tmp_path):
        with pytest.raises(UserError, match="another segbalance convert is writing to this destination"):
            OutputFolder(tmp_path / "out", {"converter": "x"}, source=tmp_path)
    OutputFolder(tmp_path / "out", {"converter": "x"}, source=tmp_path).close()  # free again


def _npz_arrays(root: Path) -> dict[str, dict[str, bytes]]:
    out = {}
    for path in sorted((root / "patches").glob("*.npz")):
        with np.load(path) as z:
            out[path.name] = {k: z[k].tobytes() for k in z.files}
    return out


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path):
    src = make_source(tmp_path / "src", n=3)
    argv = ["convert", "patches", str(src), "DST", "-j", "1", "--no-progress", "--patch-size", "2,4,4",
            "--n-patches", "400", "--fg-share", "0.5", "--seed", "3"]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "segbalance.cli", *[str(killed) if a == "DST" else a for a in argv]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    patches = killed / "patches"
    while proc.poll() is None:  # kill while case1 (patches 400..799) is being written
        if patches.is_dir() and len(os.listdir(patches)) > 450:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    done = sorted(p.name for p in (killed / ".segbalance" / "done").iterdir())
    assert "case0.json" in done and "case2.json" not in done, "the kill was meant to land mid-run"
    assert not (killed / "manifest.csv").exists()
    assert main([a.replace("DST", str(killed)) for a in argv]) == 0
    assert main([a.replace("DST", str(tmp_path / "whole")) for a in argv]) == 0
    assert files(killed) == files(tmp_path / "whole")
    assert _npz_arrays(killed) == _npz_arrays(tmp_path / "whole")
    assert tree_digest(killed) == tree_digest(tmp_path / "whole")  # markers, manifest, NPZ bytes too


# ---------------------------------------------------------------- one-line errors, exit code 2

@pytest.mark.parametrize("argv, expected", [
    (["patches", "SRC", "OUT", "--patch-size", "1,a"], "argument --patch-size: '1,a': expected 3 positive"),
    (["patches", "SRC", "OUT", "--patch-size", "64,64"], "argument --patch-size: '64,64': expected 3"),
    (["slices", "SRC", "OUT", "--size", "0,5"], "argument --size: '0,5': expected 2 positive integers"),
    (["slices", "SRC", "OUT", "--size", "224"], "argument --size: '224': expected 2 positive integers"),
    (["slices", "SRC", "OUT", "-j", "0"], "argument -j/--jobs: '0': expected a positive integer"),
])
def test_bad_arguments_are_one_line_exit_2(tmp_path, capsys, argv, expected):
    argv = [str(tmp_path / a) if a in ("SRC", "OUT") else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(["convert", *argv])
    assert exc.value.code == 2
    line = one_error_line(capsys)
    assert line.startswith(f"segbalance convert {argv[0]}: error: ") and expected in line
    assert not (tmp_path / "OUT").exists()


def test_unusable_destinations_are_one_line_exit_2(tmp_path, capsys):
    src = make_source(tmp_path / "src", n=1)
    missing = tmp_path / "nowhere" / "out"
    assert run_cli(["slices", str(src), str(missing)]) == 2
    assert f"{missing}: the destination's parent folder {tmp_path / 'nowhere'} does not exist" in \
        one_error_line(capsys)
    (tmp_path / "afile").write_text("x")
    assert run_cli(["slices", str(src), str(tmp_path / "afile")]) == 2
    assert f"{tmp_path / 'afile'}: destination exists and is not a folder" in one_error_line(capsys)
    assert run_cli(["nnunet", str(src), str(src / "out"), "--dataset-id", "1", "--name", "X"]) == 2
    assert "must not be inside the source folder" in one_error_line(capsys)
    assert not (src / "out").exists()


def test_unwritable_destination_is_one_line_exit_2(tmp_path, capsys):
    src = make_source(tmp_path / "src", n=1)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    target = ro / "out" if os.geteuid() != 0 else Path("/sys/segbalance-out")  # root ignores mode bits
    if not target.parent.is_dir():
        pytest.skip("no unwritable folder to test with")
    try:
        assert run_cli(["patches", str(src), str(target)]) == 2
    finally:
        ro.chmod(0o755)
    line = one_error_line(capsys)
    assert f"segbalance convert: error: {target}: cannot write to the destination folder" in line


def test_empty_source_is_an_error_not_zero_cases(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    (src / "images" / "notes.txt").write_text("not a volume")
    for target in (["slices"], ["patches"], ["nnunet", "--dataset-id", "2", "--name", "E"]):
        out = tmp_path / f"out_{target[0]}"
        assert run_cli([target[0], str(src), str(out), *target[1:]]) == 2
        assert f"{src}: no cases found" in one_error_line(capsys)
        assert not out.exists()


def test_2d_image_for_patches_is_one_line_exit_2(tmp_path, capsys):
    src = make_source(tmp_path / "src", n=1)
    flat = Volume(np.zeros((20, 24), np.float32), (0.9, 0.8))
    write_volume(flat, src / "images" / "flat.nii.gz")
    assert run_cli(["patches", str(src), str(tmp_path / "out"), "--patch-size", "2,8,8"]) == 2
    assert f"{src / 'images' / 'flat.nii.gz'}: 2D image; patches need 3D volumes" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_parallel_jobs_give_the_same_outputs(tmp_path):
    src = make_source(tmp_path / "src", n=3)
    a = convert_to_patches(src, tmp_path / "a", patch_size=(2, 8, 8), n_patches=4, progress=False)
    b = convert_to_patches(src, tmp_path / "b", patch_size=(2, 8, 8), n_patches=4, jobs=2, progress=False)
    assert a.rows() == b.rows()
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")


@pytest.mark.parametrize("converter", ["slices", "patches", "nnunet"])
def test_a_convert_that_converts_nothing_leaves_nothing(tmp_path, capsys, converter):
    """The issue's case: a failed convert left an empty dataset folder and a manifest with 0 cases."""
    src = make_source(tmp_path / "src", n=2)
    for i in range(2):  # every label broken: no case can be converted
        label = make_case(i)[1]
        write_volume(label.with_array(label.array.astype(np.float32) + 0.5), src / "labels" / f"case{i}.mhd")
    extra = {"slices": [], "patches": ["--patch-size", "2,8,8"],
             "nnunet": ["--dataset-id", "5", "--name", "Broken"]}[converter]
    out = tmp_path / "out"
    assert run_cli([converter, str(src), str(out), *extra]) == 1
    err = capsys.readouterr().err
    assert "label has non-integer values" in err and "nothing written" in err
    assert not out.exists()  # neither the destination nor a dataset folder, no manifest
    # into an existing (e.g. nnUNet_raw) folder: the dataset folder it would have made is gone too
    out.mkdir()
    (out / "other.txt").write_text("keep")
    if converter == "nnunet":
        assert run_cli([converter, str(src), str(out), *extra]) == 1
        assert files(out) == ["other.txt"]
    # the next run, with the labels fixed, converts everything from scratch
    make_source(src, n=2)
    fresh = tmp_path / "fresh"
    assert run_cli([converter, str(src), str(fresh), *extra]) == 0


def test_a_partly_failed_convert_is_completed_by_the_next_run(tmp_path, capsys):
    src = make_source(tmp_path / "src", n=2)
    label = make_case(1)[1]
    write_volume(label.with_array(label.array.astype(np.float32) + 0.5), src / "labels" / "case1.mhd")
    out = tmp_path / "out"
    assert run_cli(["slices", str(src), str(out), "--size", "16,16"]) == 1
    assert "incomplete: the finished cases are kept" in capsys.readouterr().err
    assert {r["case"] for r in json.loads((out / "manifest.json").read_text())} == {"case0"}
    assert not (out / ".segbalance" / "done" / "case1.json").exists()
    write_volume(make_case(1)[1], src / "labels" / "case1.mhd")  # fixed
    assert run_cli(["slices", str(src), str(out), "--size", "16,16"]) == 0
    assert "2 case(s) converted (1 already done)" in capsys.readouterr().out
    assert {r["case"] for r in json.loads((out / "manifest.json").read_text())} == {"case0", "case1"}
