"""DICOM labels in: RTSTRUCT and DICOM-SEG on real CT/MR volumes written as tilted int16 DICOM series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from segbalance.io.dicom import read_dicom_series, write_dicom_series
from segbalance.io.dicom_common import parse_name_map
from segbalance.io.dicom_labels import find_dicom_label, read_dicom_label
from segbalance.io.dicom_seg import write_dicom_seg
from segbalance.io.rtstruct import write_rtstruct
from segbalance.io.volume import Volume
from segbalance.io.volumes import read_volume

_HERE = Path(__file__).resolve().parent
REAL_DIRS = [_HERE / "data" / "real"]  # cropped real cases (tests/data/real/README.md)
CASES = ["lung1", "brain1", "breast1"]


def real_dir() -> Path:
    for d in REAL_DIRS:
        if (d / "lung1_image.nrrd").is_file():
            return d
    pytest.skip("real CT/MR volumes not found in tests/data/real")


def lesion_crop(case: str, size: tuple[int, int, int], shift: tuple[int, int, int] = (0, 0, 0)):
    """Slices of a ``size`` (z, y, x) box around the lesion of real case ``case`` (moved by ``shift``)."""
    label = read_volume(real_dir() / f"{case}_label.nrrd").array
    centre = np.argwhere(label > 0).mean(0).round().astype(int) + np.asarray(shift)
    out = []
    for c, n, dim in zip(centre, size, label.shape):
        start = int(np.clip(c - n // 2, 0, max(dim - n, 0)))
        out.append(slice(start, start + n))
    return tuple(out)


def tilted(angles=(10.0, -15.0, 30.0)) -> np.ndarray:
    """A rotation (det +1) that also flips x and y: a non-identity ImageOrientationPatient."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", angles, degrees=True).as_matrix() @ np.diag([-1.0, -1.0, 1.0])


def make_dicom_case(case: str, dst: Path, *, crop: tuple[slice, ...] | None = None, name: str | None = None,
                    extra_tags: dict | None = None) -> tuple[Volume, dict[str, np.ndarray]]:
    """Write real case ``case`` as a tilted int16 DICOM series ``dst/<name>/``; return the series read back
    and its masks ``{"GTV": lesion, "Body": intensity threshold (with holes)}``."""
    src = real_dir()
    image = read_volume(src / f"{case}_image.nrrd")
    label = read_volume(src / f"{case}_label.nrrd").array > 0
    array = image.array
    if crop is not None:
        array, label = array[crop], label[crop]
    ct = float(array.min()) < -500
    vol = Volume(array, image.spacing, (-120.5, 40.25, 17.0), tilted().ravel())
    folder = dst / (name or case)
    # int16 with RescaleSlope/Intercept: CT 1/-1024 (HU), MR 0.5/-100 (a non-unit slope)
    write_dicom_series(vol, folder, rescale_slope=1.0 if ct else 0.5,
                       rescale_intercept=-1024.0 if ct else -100.0, modality="CT" if ct else "MR",
                       shuffle_names=True, extra_tags=extra_tags)
    back = read_dicom_series(folder)
    np.testing.assert_array_equal(back.array, array)  # real units back, in position order, not file order
    smooth = ndimage.gaussian_filter(back.array.astype(np.float32), (0, 1.5, 1.5))
    body = smooth > (-400 if ct else np.percentile(smooth, 60))  # lungs / ventricles make holes
    return back, {"GTV": label, "Body": body}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


@pytest.mark.parametrize("case", CASES)
def test_rtstruct_rasterizes_real_masks(case, tmp_path):
    """Masks -> contours in patient coordinates (tilted, flipped, 2-6.5 mm slices) -> voxels: Dice >= 0.95
    per structure against the original masks; where they overlap the higher label value wins."""
    image, masks = make_dicom_case(case, tmp_path)
    assert not np.allclose(image.direction_matrix, np.eye(3))
    assert image.spacing[0] >= 2.0
    write_rtstruct(masks, tmp_path / case, tmp_path / "rt.dcm")
    label = read_dicom_label(tmp_path / "rt.dcm", image, {1: "body", 2: "gtv"})  # case-insensitive
    assert label.shape == image.shape and label.path == tmp_path / "rt.dcm"
    gtv, body = masks["GTV"], masks["Body"]
    assert dice(label.array == 2, gtv) >= 0.95
    assert dice(label.array == 1, body & ~gtv) >= 0.95
    assert (label.array[gtv] == 2).all()  # overlap: the higher value wins
    assert body[~np.isin(label.array, [0])].any()


def test_rtstruct_holes_and_odd_shapes_exact(tmp_path):
    """A ring (hole), two components and a one-voxel line on one slice come back voxel-exact."""
    image, _ = make_dicom_case("breast1", tmp_path)
    mask = np.zeros(image.shape, bool)
    yy, xx = np.mgrid[: image.shape[1], : image.shape[2]]
    r = np.hypot(yy - 60, xx - 22)
    mask[5] = (r < 15) & (r >= 7)  # ring with a hole
    mask[6, 10:20, 5:9] = True
    mask[6, 30:40, 30:35] = True  # second component
    mask[7, 50:90, 20] = True  # one voxel wide
    write_rtstruct({"Shape": mask}, tmp_path / "breast1", tmp_path / "rt.dcm")
    label = read_dicom_label(tmp_path / "rt.dcm", image, parse_name_map("1=shape"))
    np.testing.assert_array_equal(label.array == 1, mask)


@pytest.mark.parametrize("case", CASES)
def test_dicom_seg_reads_back_voxel_exact(case, tmp_path):
    image, masks = make_dicom_case(case, tmp_path)
    labels = np.where(masks["GTV"], 2, np.where(masks["Body"], 1, 0)).astype(np.uint8)
    write_dicom_seg(labels, tmp_path / case, tmp_path / "seg.dcm", label_map={1: "Body", 2: "GTV"})
    back = read_dicom_label(tmp_path / "seg.dcm", image, {1: "BODY", 2: "gtv"})
    np.testing.assert_array_equal(back.array, labels)
    # without a label map the segment numbers are the values (here the same)
    np.testing.assert_array_equal(read_dicom_label(tmp_path / "seg.dcm", image).array, labels)
    # a map that swaps the names swaps the values
    swapped = read_dicom_label(tmp_path / "seg.dcm", image, {1: "GTV", 2: "Body"}).array
    np.testing.assert_array_equal(swapped == 1, masks["GTV"])
    np.testing.assert_array_equal(swapped == 2, masks["Body"] & ~masks["GTV"])


def test_missing_name_lists_the_names_found(tmp_path):
    image, masks = make_dicom_case("breast1", tmp_path)
    write_rtstruct(masks, tmp_path / "breast1", tmp_path / "rt.dcm")
    with pytest.raises(ValueError, match=r"rt\.dcm: no ROI named 'Lung_L' \(label 2\).*'GTV', 'Body'"):
        read_dicom_label(tmp_path / "rt.dcm", image, {1: "GTV", 2: "Lung_L"})
    with pytest.raises(ValueError, match=r"needs a label map naming its ROIs.*'GTV', 'Body'"):
        read_dicom_label(tmp_path / "rt.dcm", image, None)
    write_dicom_seg(masks["GTV"].astype(np.uint8), tmp_path / "breast1", tmp_path / "seg.dcm",
                    label_map={1: "Lesion"})
    with pytest.raises(ValueError, match=r"seg\.dcm: no segment named 'GTV' \(label 1\).*'Lesion'"):
        read_dicom_label(tmp_path / "seg.dcm", image, {1: "GTV"})


def test_duplicate_roi_names_only_matter_when_asked_for(tmp_path):
    image, masks = make_dicom_case("breast1", tmp_path)
    write_rtstruct({**masks, "Extra": masks["GTV"]}, tmp_path / "breast1", tmp_path / "rt.dcm")
    ds = pydicom.dcmread(tmp_path / "rt.dcm")
    ds.StructureSetROISequence[2].ROIName = "gtv "
    ds.save_as(tmp_path / "rt_dup.dcm")
    with pytest.raises(ValueError, match=r"rt_dup\.dcm: 2 ROIs are named 'GTV' \(numbers 1, 3\)"):
        read_dicom_label(tmp_path / "rt_dup.dcm", image, {1: "GTV"})
    body = read_dicom_label(tmp_path / "rt_dup.dcm", image, {1: "Body"}).array == 1
    assert dice(body, masks["Body"]) >= 0.95


def test_label_of_another_series_is_refused_naming_both_files(tmp_path):
    image, masks = make_dicom_case("breast1", tmp_path, name="a")
    make_dicom_case("breast1", tmp_path, name="b")  # same pixels, other series / frame of reference
    other = read_dicom_series(tmp_path / "b")
    write_rtstruct(masks, tmp_path / "b", tmp_path / "rt_b.dcm")
    write_dicom_seg(masks["GTV"].astype(np.uint8), tmp_path / "b", tmp_path / "seg_b.dcm")
    for name in ("rt_b.dcm", "seg_b.dcm"):
        with pytest.raises(ValueError, match=rf"{name}: this .* refers to series .* but the image .*/a is"):
            read_dicom_label(tmp_path / name, image, {1: "GTV"})
    # same series UID but another frame of reference: refused on the FrameOfReferenceUID
    ds = pydicom.dcmread(tmp_path / "rt_b.dcm")
    ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0] \
        .SeriesInstanceUID = pydicom.dcmread(next((tmp_path / "a").iterdir())).SeriesInstanceUID
    ds.save_as(tmp_path / "rt_frame.dcm")
    with pytest.raises(ValueError, match=r"rt_frame\.dcm: this RTSTRUCT's FrameOfReferenceUID .* image .*/a"):
        read_dicom_label(tmp_path / "rt_frame.dcm", image, {1: "GTV"})
    assert read_dicom_label(tmp_path / "rt_b.dcm", other, {1: "GTV"}).array.any()


def test_label_folder_with_one_file_and_two_files(tmp_path):
    image, masks = make_dicom_case("breast1", tmp_path)
    (tmp_path / "lab").mkdir()
    write_rtstruct(masks, tmp_path / "breast1", tmp_path / "lab" / "x.dcm")
    (tmp_path / "lab" / "README.txt").write_text("not DICOM")
    assert find_dicom_label(tmp_path / "lab") == (tmp_path / "lab" / "x.dcm", "rtstruct")
    assert find_dicom_label(tmp_path / "breast1") is None  # an image series is not a label file
    write_dicom_seg(masks["GTV"].astype(np.uint8), tmp_path / "breast1", tmp_path / "lab" / "y.dcm")
    with pytest.raises(ValueError, match=r"lab: holds 2 DICOM-SEG/RTSTRUCT files \(x\.dcm \(rtstruct\), "):
        read_dicom_label(tmp_path / "lab", image, {1: "GTV"})


def test_contour_between_slices_is_refused(tmp_path):
    image, masks = make_dicom_case("breast1", tmp_path)
    write_rtstruct({"GTV": masks["GTV"]}, tmp_path / "breast1", tmp_path / "rt.dcm")
    ds = pydicom.dcmread(tmp_path / "rt.dcm")
    contour = ds.ROIContourSequence[0].ContourSequence[0]
    points = np.asarray(contour.ContourData, float).reshape(-1, 3) + 0.5 * image.spacing[0] * \
        image.direction_matrix[:, 2]
    contour.ContourData = [f"{v:.4f}" for v in points.ravel()]
    ds.save_as(tmp_path / "rt_off.dcm")
    with pytest.raises(ValueError, match=r"rt_off\.dcm: a contour of ROI 'GTV' does not lie in a slice"):
        read_dicom_label(tmp_path / "rt_off.dcm", image, {1: "GTV"})


def test_parse_name_map_errors():
    assert parse_name_map("1=GTV, 2=Lung_L") == {1: "GTV", 2: "Lung_L"}
    for bad, msg in [("GTV", "VALUE=NAME"), ("x=GTV", "not an integer"), ("1=a,1=b", "duplicate"),
                     ("", "empty")]:
        with pytest.raises(ValueError, match=msg):
            parse_name_map(bad)


# ------------------------------------------------------------------------------ convert + LoadVolumed


def _hospital_folder(root: Path) -> dict[str, tuple[Volume, dict]]:
    """``root/images/<case>/`` series with ``labels/lung.dcm`` (RTSTRUCT) and ``labels/breast/`` (a folder
    holding one DICOM-SEG)."""
    out = {}
    image, masks = make_dicom_case("lung1", root / "images", crop=lesion_crop("lung1", (48, 80, 80)),
                                   name="lung")
    (root / "labels").mkdir(parents=True)
    write_rtstruct({"Body": masks["Body"], "GTV": masks["GTV"]}, root / "images" / "lung",
                   root / "labels" / "lung.dcm")
    out["lung"] = (image, masks)
    image, masks = make_dicom_case("breast1", root / "images", name="breast")
    labels = np.where(masks["GTV"], 2, np.where(masks["Body"], 1, 0)).astype(np.uint8)
    write_dicom_seg(labels, root / "images" / "breast", root / "labels" / "breast" / "seg.dcm",
                    label_map={1: "body", 2: "gtv"})
    out["breast"] = (image, masks)
    return out


def test_convert_nnunet_slices_patches_with_dicom_labels(tmp_path):
    from segbalance.cli import main

    cases = _hospital_folder(tmp_path / "src")
    src = str(tmp_path / "src")
    rc = main(["convert", "nnunet", src, str(tmp_path / "nn"), "--dataset-id", "7", "--name", "Hosp",
               "--label-map", "0=background,1=BODY,2=gtv", "--no-progress"])
    assert rc == 2  # a CT and an MR series in one channel: nnU-Net would normalise them alike
    rc = main(["convert", "nnunet", src, str(tmp_path / "nn"), "--dataset-id", "7", "--name", "Hosp",
               "--label-map", "0=background,1=BODY,2=gtv", "--channel-names", "CT", "--no-progress"])
    assert rc == 0
    ds = tmp_path / "nn" / "Dataset007_Hosp"
    for cid, (image, masks) in cases.items():
        label = read_volume(ds / "labelsTr" / f"{cid}.nii.gz")
        assert np.allclose(label.direction, image.direction, atol=1e-6)
        assert dice(label.array == 2, masks["GTV"]) >= 0.95
        assert dice(label.array == 1, masks["Body"] & ~masks["GTV"]) >= 0.95
        if cid == "breast":  # DICOM-SEG: exact
            np.testing.assert_array_equal(label.array == 2, masks["GTV"])
    rc = main(["convert", "patches", src, str(tmp_path / "pa"), "--patch-size", "8,32,32", "--n-patches", "2",
               "--label-map", "1=body,2=GTV", "--no-progress"])
    assert rc == 0
    for f in (tmp_path / "pa" / "patches").glob("breast_*.npz"):  # patches cut from the exact SEG label
        patch = np.load(f)
        z, y, x = patch["start"]
        pz, py, px = patch["label"].shape
        labels = np.pad(np.where(cases["breast"][1]["GTV"], 2, np.where(cases["breast"][1]["Body"], 1, 0)),
                        [(0, max(0, n - s)) for n, s in zip((pz, py, px), cases["breast"][0].shape)])
        np.testing.assert_array_equal(patch["label"], labels[z:z + pz, y:y + py, x:x + px])
    rc = main(["convert", "slices", src, str(tmp_path / "sl"), "--format", "npz", "--native-size",
               "--fg-only", "--label-map", "1=body,2=GTV", "--no-progress"])
    assert rc == 0
    _, masks = cases["breast"]
    expected = np.where(masks["GTV"], 2, np.where(masks["Body"], 1, 0))
    files = sorted((tmp_path / "sl" / "slices").glob("breast_*.npz"))
    assert len(files) == int(expected.any(axis=(1, 2)).sum())
    for f in files:  # DICOM-SEG label, native size: every slice exact
        np.testing.assert_array_equal(np.load(f)["label"], expected[int(f.stem.split("_")[-1])])


def test_convert_reports_a_missing_roi_name(tmp_path, capsys):
    from segbalance.cli import main

    _hospital_folder(tmp_path / "src")
    rc = main(["convert", "patches", str(tmp_path / "src"), str(tmp_path / "pa"), "--patch-size", "8,32,32",
               "--label-map", "1=Lung_L", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "lung.dcm: no ROI named 'Lung_L' (label 1) in this RTSTRUCT; its ROIs are: 'Body', 'GTV'" in err
    assert "seg.dcm: no segment named 'Lung_L'" in err


def test_load_volumed_rasterizes_a_dicom_label(tmp_path):
    from segbalance.preprocessing.transforms import LoadVolumed

    cases = _hospital_folder(tmp_path / "src")
    image, masks = cases["breast"]
    load = LoadVolumed(["image", "label"], ensure_channel_first=True, dtype=(np.float32, np.uint8),
                       label_map="1=Body,2=GTV")
    out = load({"image": str(tmp_path / "src" / "images" / "breast"),
                "label": str(tmp_path / "src" / "labels" / "breast")})
    lab = np.asarray(out["label"][0])  # (x, y, z)
    np.testing.assert_array_equal(lab.transpose(2, 1, 0) == 2, masks["GTV"])
    np.testing.assert_allclose(np.asarray(out["label"].affine), np.asarray(out["image"].affine))


def test_write_dicom_series_left_handed_grid_keeps_physical_positions(tmp_path):
    """DICOM's slice normal is row x column: a left-handed grid is stored reversed in z, so every voxel
    keeps its physical position (and a DICOM label drawn on it lands on the right voxels)."""
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    vol = Volume(array, (3.0, 1.0, 2.0), (1.0, 2.0, 3.0), np.diag([1.0, 1.0, -1.0]).ravel())
    write_dicom_series(vol, tmp_path / "s", rescale_intercept=0.0)
    back = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(back.array, array[::-1])
    np.testing.assert_allclose(back.origin, (1.0, 2.0, 3.0 - 3 * 3.0))
    np.testing.assert_allclose(back.direction_matrix, np.eye(3))


@pytest.mark.parametrize("kind", ["rtstruct", "seg"])
@pytest.mark.parametrize("cut_at", ["2000", "half", "end-10"])
def test_truncated_label_file_is_reported_as_damaged_naming_it(tmp_path, kind, cut_at):
    """The issue's case: an RTSTRUCT cut to its first 2,000 bytes read as 'its ROIs are: none'. Cut
    anywhere (2,000 bytes, half, all but the last 10 bytes) it is reported as damaged, naming the file."""
    image, masks = make_dicom_case("breast1", tmp_path)
    path = tmp_path / f"{kind}.dcm"
    if kind == "rtstruct":
        write_rtstruct({"GTV": masks["GTV"]}, tmp_path / "breast1", path)
    else:
        write_dicom_seg(masks["GTV"].astype(np.uint8), tmp_path / "breast1", path, label_map={1: "GTV"})
    data = path.read_bytes()
    n = {"2000": 2000, "half": len(data) // 2, "end-10": len(data) - 10}[cut_at]
    cut = tmp_path / f"cut_{kind}.dcm"
    cut.write_bytes(data[:n])
    what = "RTSTRUCT" if kind == "rtstruct" else "DICOM-SEG"
    with pytest.raises(ValueError, match=rf"cut_{kind}\.dcm: damaged or truncated {what}") as err:
        read_dicom_label(cut, image, {1: "GTV"})
    assert "none" not in str(err.value)
    np.testing.assert_array_equal(read_dicom_label(path, image, {1: "GTV"}).array == 1, masks["GTV"])


def test_slice_cut_inside_its_header_is_reported_as_damaged(tmp_path):
    """A slice cut before Rows / ImagePositionPatient used to be skipped as 'not an image' (then a gap)."""
    image, _ = make_dicom_case("breast1", tmp_path)
    victim = sorted((tmp_path / "breast1").iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:300])
    with pytest.raises(ValueError, match=rf"{victim.name}: damaged or truncated DICOM file"):
        read_dicom_series(tmp_path / "breast1")


def test_convert_names_the_channel_by_the_series_modality(tmp_path, capsys):
    """The issue's case: an MR series converted to nnU-Net got the channel name CT."""
    import json

    from segbalance.cli import main

    image, masks = make_dicom_case("brain1", tmp_path / "src" / "images", name="mr1")
    (tmp_path / "src" / "labels").mkdir()
    write_rtstruct({"GTV": masks["GTV"]}, tmp_path / "src" / "images" / "mr1",
                   tmp_path / "src" / "labels" / "mr1.dcm")
    assert main(["convert", "nnunet", str(tmp_path / "src"), str(tmp_path / "nn"), "--dataset-id", "8",
                 "--name", "Mr", "--label-map", "0=background,1=GTV", "--no-progress"]) == 0
    meta = json.loads((tmp_path / "nn" / "Dataset008_Mr" / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "MR"}
    make_dicom_case("lung1", tmp_path / "src" / "images", crop=lesion_crop("lung1", (8, 40, 40)), name="ct1")
    capsys.readouterr()
    assert main(["convert", "nnunet", str(tmp_path / "src"), str(tmp_path / "nn2"), "--dataset-id", "8",
                 "--name", "Mr", "--label-map", "0=background,1=GTV", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "different modalities: CT (e.g. case ct1), MR (e.g. case mr1)" in err and "--channel-names" in err
