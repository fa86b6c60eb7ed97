"""Volume I/O: geometry and intensities survive every format; bad files give errors naming them."""

from __future__ import annotations

import gzip
import os
import re
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from segbalance.atomic import (
    _current_umask,
    atomic_save_npz,
    atomic_write,
    atomic_write_text,
    remove_stale_temps,
)
from segbalance.io.dicom import write_dicom_series
from segbalance.io.volume import Volume
from segbalance.io.volumes import case_id, image_dimension, read_volume, source_files, write_volume

REAL = Path(__file__).resolve().parent / "data" / "real"  # cropped real cases (tests/data/real/README.md)
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


def oblique_direction(angle: float = 0.3) -> np.ndarray:
    """Rotation about y then z: a proper (det = +1) oblique direction matrix."""
    c, s = np.cos(angle), np.sin(angle)
    ry = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    rz = np.array([[np.cos(0.2), -np.sin(0.2), 0], [np.sin(0.2), np.cos(0.2), 0], [0, 0, 1]])
    return rz @ ry


@pytest.fixture
def volume() -> Volume:
    rng = np.random.default_rng(0)
    array = rng.normal(40, 300, size=(5, 9, 11)).round().astype(np.float32)  # HU-like integers
    return Volume(array, spacing=(2.5, 0.8, 0.7), origin=(10.5, -20.25, 30.0),
                  direction=tuple(oblique_direction().ravel()))


def assert_same_geometry(a: Volume, b: Volume, atol: float = 1e-5) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=1e-6)
    np.testing.assert_allclose(a.origin, b.origin, atol=atol)
    np.testing.assert_allclose(a.direction, b.direction, atol=atol)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".mhd", ".mha", ".nrrd"])
def test_round_trip_keeps_values_and_oblique_anisotropic_geometry(tmp_path, volume, ext):
    path = write_volume(volume, tmp_path / f"case_01{ext}")
    back = read_volume(path)
    assert_same_geometry(volume, back)
    np.testing.assert_array_equal(back.array, volume.array)
    assert case_id(path) == "case_01"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_spacing_is_in_array_axis_order(tmp_path, volume):
    """spacing[0] belongs to array axis 0 (z): ITK's x spacing is the last entry."""
    image = volume.to_sitk()
    assert image.GetSpacing() == pytest.approx((0.7, 0.8, 2.5))
    assert image.GetSize() == (11, 9, 5)


def test_nibabel_file_geometry_matches_nibabel_affine():
    """nibabel's RAS affine, flipped to LPS, equals direction @ diag(spacing_xyz) and origin."""
    path = NIBABEL_DATA / "anatomical.nii"
    vol = read_volume(path)
    img = nib.load(path)
    lps = np.diag([-1, -1, 1, 1]) @ img.affine
    np.testing.assert_allclose(vol.direction_matrix @ np.diag(vol.spacing[::-1]), lps[:3, :3], atol=1e-5)
    np.testing.assert_allclose(vol.origin, lps[:3, 3], atol=1e-5)
    np.testing.assert_allclose(vol.array.T, np.asarray(img.dataobj), atol=0)


def test_pydicom_ct_small_is_read_in_hounsfield_units():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    vol = read_volume(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert float(ds.RescaleIntercept) != 0  # the test needs a real rescale
    np.testing.assert_allclose(vol.array[0], hu)
    assert vol.spacing[1:] == pytest.approx([float(v) for v in ds.PixelSpacing])
    assert vol.origin == pytest.approx([float(v) for v in ds.ImagePositionPatient])


def test_dicom_series_sorted_by_position_with_oblique_orientation_and_rescale(tmp_path, volume):
    # file names are shuffled and InstanceNumber runs backwards: only the position gives the order
    write_dicom_series(volume, tmp_path / "series", rescale_slope=0.5, rescale_intercept=-1000.0,
                       shuffle_names=True, seed=3)
    back = read_volume(tmp_path / "series")
    assert_same_geometry(volume, back, atol=1e-4)
    np.testing.assert_allclose(back.array, volume.array, atol=1e-6)


def test_dicom_folder_with_two_series_lists_uids_and_reads_the_chosen_one(tmp_path, volume):
    write_dicom_series(volume, tmp_path / "mixed", series_uid="1.2.3.4")
    other = volume.with_array(volume.array[:, :, ::-1].copy())
    write_dicom_series(other, tmp_path / "mixed" / "b", series_uid="1.2.3.5")
    with pytest.raises(ValueError, match=r"2 DICOM series.*1\.2\.3\.4.*1\.2\.3\.5"):
        read_volume(tmp_path / "mixed")
    chosen = read_volume(tmp_path / "mixed", series_uid="1.2.3.5")
    np.testing.assert_allclose(chosen.array, other.array)
    with pytest.raises(ValueError, match="no series with SeriesInstanceUID 9.9"):
        read_volume(tmp_path / "mixed", series_uid="9.9")


def test_dicom_series_gap_names_the_slice_after_the_gap(tmp_path, volume):
    paths = write_dicom_series(volume, tmp_path / "gap")  # names slice_0000 ... in position order
    paths[2].unlink()
    with pytest.raises(ValueError, match=r"slice_0003\.dcm: gap in DICOM series.*5\.000 mm.*2\.500 mm"):
        read_volume(tmp_path / "gap")


def test_truncated_dicom_slice_is_named(tmp_path, volume):
    paths = write_dicom_series(volume, tmp_path / "trunc")
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) - 40])
    with pytest.raises(ValueError, match="slice_0001.dcm: damaged or truncated DICOM file"):
        read_volume(tmp_path / "trunc")


def test_truncated_mhd_raw_names_the_data_file(tmp_path, volume):
    path = write_volume(volume, tmp_path / "case.mhd", compress=False)
    raw = tmp_path / "case.raw"
    raw.write_bytes(raw.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"case\.raw: truncated data file, 100 bytes"):
        read_volume(path)
    raw.unlink()
    with pytest.raises(FileNotFoundError, match=r"case\.raw \(ElementDataFile\) does not exist"):
        read_volume(path)


@pytest.mark.parametrize("how", ["nii", "nii.gz recompressed", "nii.gz cut"])
def test_truncated_nifti_is_named(tmp_path, volume, how):
    """SimpleITK alone would read these and fill the missing voxels with zeros."""
    ext = ".nii" if how == "nii" else ".nii.gz"
    path = write_volume(volume, tmp_path / f"case{ext}")
    raw = path.read_bytes()
    if how == "nii":
        path.write_bytes(raw[: len(raw) - 40])
    elif how == "nii.gz recompressed":  # a valid gzip stream holding half the image
        path.write_bytes(gzip.compress(gzip.decompress(raw)[: len(gzip.decompress(raw)) // 2]))
    else:  # the compressed stream itself cut short
        path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=rf"case{re.escape(ext)}: unreadable or truncated"):
        read_volume(path)


def test_unreadable_and_missing_files(tmp_path):
    junk = tmp_path / "junk.nrrd"
    junk.write_bytes(b"this is not an image\n" * 10)
    with pytest.raises(ValueError, match=r"junk\.nrrd: unreadable"):
        read_volume(junk)
    with pytest.raises(FileNotFoundError, match="nothing.nii.gz"):
        read_volume(tmp_path / "nothing.nii.gz")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported volume format '.txt'"):
        read_volume(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="cannot write format '.png'"):
        write_volume(Volume(np.zeros((2, 2, 2)), (1, 1, 1)), tmp_path / "x.png")


def test_volume_builds_from_an_array_and_a_direction_matrix():
    direction = oblique_direction()
    vol = Volume([[[0, 1], [2, 3]]], spacing=(2.0, 0.5, 0.25), origin=(1, 2, 3), direction=direction)
    image = vol.to_sitk()
    assert vol.array.dtype.kind == "i" and vol.shape == (1, 2, 2)
    assert image.GetSpacing() == pytest.approx((0.25, 0.5, 2.0))
    assert image.GetDirection() == pytest.approx(tuple(direction.ravel()))
    assert Volume.from_sitk(image).origin == (1.0, 2.0, 3.0)


def test_source_files_lists_data_files_and_series_slices(tmp_path, volume):
    write_volume(volume, tmp_path / "a.mhd", compress=False)
    assert source_files(tmp_path / "a.mhd") == [tmp_path / "a.mhd", tmp_path / "a.raw"]
    assert source_files(write_volume(volume, tmp_path / "b.nii.gz")) == [tmp_path / "b.nii.gz"]
    written = write_dicom_series(volume, tmp_path / "series")
    assert source_files(tmp_path / "series") == sorted(written)
    assert image_dimension(tmp_path / "b.nii.gz") == 3
    assert image_dimension(write_volume(Volume(np.zeros((4, 5)), (1, 1)), tmp_path / "flat.nrrd")) == 2


def test_atomic_npz_is_deterministic_and_loads_with_numpy(tmp_path):
    arrays = {"image": np.arange(24, dtype=np.int16).reshape(2, 3, 4), "spacing": np.array([1.5, 0.7])}
    for compress in (False, True):
        a = atomic_save_npz(tmp_path / f"a{compress}.npz", compress=compress, **arrays)
        b = atomic_save_npz(tmp_path / f"b{compress}.npz", compress=compress, **arrays)
        assert a.read_bytes() == b.read_bytes()  # no timestamps: a re-run gives the same file
        with np.load(a) as z:
            assert sorted(z.files) == ["image", "spacing"]
            np.testing.assert_array_equal(z["image"], arrays["image"])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["aFalse.npz", "aTrue.npz", "bFalse.npz", "bTrue.npz"]


def test_atomic_files_get_the_permissions_a_plain_write_gives(tmp_path):
    """mkstemp creates 0600 files: outputs must instead follow the umask, or keep the replaced file's mode."""
    old = os.umask(0o022)
    try:
        assert _current_umask() == 0o022 and os.umask(0o022) == 0o022  # read without being changed
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        fresh = atomic_write_text(tmp_path / "fresh.json", "{}")
        npz = atomic_save_npz(tmp_path / "a.npz", image=np.zeros(3))
        assert stat.S_IMODE(fresh.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
        assert stat.S_IMODE(npz.stat().st_mode) == 0o644
        os.chmod(fresh, 0o640)
        atomic_write_text(fresh, "{}")  # a re-run keeps the mode the user gave the file
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o640
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write_text(tmp_path / "private.json", "{}").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_atomic_write_leaves_nothing_on_error_and_moves_side_files(tmp_path, volume):
    (tmp_path / "x.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert (tmp_path / "x.bin").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]
    write_volume(volume, tmp_path / "v.mhd")  # header and .zraw land together
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mhd", "v.zraw", "x.bin"]


def test_remove_stale_temps_removes_only_our_temporary_names(tmp_path):
    (tmp_path / "sub").mkdir()
    ours = [tmp_path / ".a.npz.x1.segbalance-tmp", tmp_path / "sub" / ".b.png.x2.segbalance-tmp"]
    for p in ours:
        p.write_bytes(b"")
    (tmp_path / ".c.nii.gz.x3.segbalance-tmp").mkdir()
    (tmp_path / ".c.nii.gz.x3.segbalance-tmp" / "c.nii.gz").write_bytes(b"")
    keep = [tmp_path / "a.segbalance-tmp", tmp_path / ".hidden", tmp_path / "sub" / ".b.png.tmp"]
    for p in keep:
        p.write_bytes(b"")
    removed = remove_stale_temps(tmp_path)
    assert removed == sorted(ours + [tmp_path / ".c.nii.gz.x3.segbalance-tmp"])
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(keep)


def test_real_lung_ct_geometry_and_tiny_lesion():
    image = read_volume(REAL / "lung1_image.nrrd")
    label = read_volume(REAL / "lung1_label.nrrd")
    assert image.shape == label.shape == (48, 128, 128)  # the 512×512×48 CT cropped around its lesion
    assert image.spacing[0] == pytest.approx(5.0, rel=1e-3)
    assert image.spacing[1] == image.spacing[2] == pytest.approx(0.57, abs=0.01)
    np.testing.assert_allclose(np.abs(np.linalg.det(image.direction_matrix)), 1.0, atol=1e-6)
    assert image.array.min() >= -1024 - 1 and image.array.max() <= 3071 + 1  # HU range
    assert set(np.unique(label.array).tolist()) == {0, 1}
    assert int((label.array == 1).sum()) == 837  # the whole lesion: 0.007 % of the full 512×512×48 CT
    np.testing.assert_allclose(image.origin, label.origin, atol=1e-3)
