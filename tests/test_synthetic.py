"""Phantoms: deterministic per seed, lesion share in (0, 1 %), geometry round-trips (NIfTI, MHD, DICOM)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from segbalance.io.volumes import read_volume
from segbalance.preprocessing.pairing import find_cases
from segbalance.synthetic import make_phantom, write_phantom_dataset

SHAPE = (12, 40, 36)
SPACING = (2.5, 0.8, 0.7)


@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_deterministic_per_seed(modality):
    a = make_phantom(SHAPE, SPACING, seed=3, modality=modality)
    b = make_phantom(SHAPE, SPACING, seed=3, modality=modality)
    c = make_phantom(SHAPE, SPACING, seed=4, modality=modality)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(a.label, c.label)


@pytest.mark.parametrize("seed", range(6))
def test_lesion_share_and_classes(seed):
    p = make_phantom(seed=seed, shape=(24, 48, 48))
    share = (p.label == 2).mean()
    assert 0 < share < 0.01
    assert 0.02 < (p.label == 1).mean() < 0.5  # a large organ
    assert p.image.dtype == np.float32 and p.label.dtype == np.uint8 and p.image.shape == (24, 48, 48)


def test_ct_intensities_hu_like():
    p = make_phantom(SHAPE, SPACING, seed=1)
    air = p.image[(p.label == 0)].min()
    assert air < -900  # air outside the body
    organ = np.median(p.image[p.label == 1])
    assert 45 < organ < 75
    lesion = np.median(p.image[p.label == 2])
    assert abs(lesion - p.meta["lesion_hu"]) < 40


def test_mri_bias_field_and_positive():
    p = make_phantom(SHAPE, SPACING, seed=2, modality="mri")
    assert p.image.min() >= 0  # Rician magnitude
    assert np.median(p.image[p.label == 1]) > np.median(p.image[(p.label == 0) & (p.image > 150)])


def test_bad_arguments():
    with pytest.raises(ValueError, match="modality"):
        make_phantom(SHAPE, SPACING, modality="pet")
    with pytest.raises(ValueError, match="spacing"):
        make_phantom(SHAPE, (1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="n_cases"):
        write_phantom_dataset("/nonexistent", 0)


@pytest.mark.parametrize("fmt", ["nifti", "mhd", "dicom"])
def test_geometry_round_trip(tmp_path, fmt):
    ids = write_phantom_dataset(tmp_path, 2, format=fmt, seed=5, shape=SHAPE, spacing=SPACING)
    assert ids == ["case_000", "case_001"]
    cases = find_cases(tmp_path)
    assert [c.case_id for c in cases] == ids and all(c.label is not None for c in cases)
    ref = make_phantom(SHAPE, SPACING, seed=5)
    image = read_volume(cases[0].images[0])
    label = read_volume(cases[0].label)
    assert image.shape == SHAPE
    np.testing.assert_allclose(image.spacing, SPACING, rtol=1e-5)
    np.testing.assert_allclose(image.origin, ref.origin, atol=1e-4)
    np.testing.assert_allclose(np.ravel(image.direction), ref.direction, atol=1e-6)
    np.testing.assert_array_equal(label.array, ref.label)
    tol = 0.51 if fmt == "dicom" else 1e-4  # int16 storage rounds to 1 HU
    np.testing.assert_allclose(image.array, ref.image, atol=tol)
    # SimpleITK directly: spacing in (x, y, z)
    path = cases[0].images[0]
    if fmt == "dicom":
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        img = reader.Execute()
    else:
        img = sitk.ReadImage(str(path))
    np.testing.assert_allclose(img.GetSpacing(), SPACING[::-1], rtol=1e-5)
    np.testing.assert_allclose(img.GetOrigin(), ref.origin, atol=1e-4)
    np.testing.assert_allclose(sitk.GetArrayFromImage(img), ref.image, atol=tol)


def test_dicom_series_tags(tmp_path):
    import pydicom

    write_phantom_dataset(tmp_path, 1, format="dicom", seed=0, shape=SHAPE, spacing=SPACING)
    files = sorted((tmp_path / "images" / "case_000").glob("*.dcm"))
    assert len(files) == SHAPE[0]
    ds = [pydicom.dcmread(f) for f in files]
    assert len({d.SeriesInstanceUID for d in ds}) == 1
    z = sorted(float(d.ImagePositionPatient[2]) for d in ds)
    np.testing.assert_allclose(np.diff(z), SPACING[0], atol=1e-4)
    assert float(ds[0].RescaleIntercept) == -1024 and float(ds[0].RescaleSlope) == 1
    assert [float(v) for v in ds[0].PixelSpacing] == pytest.approx([SPACING[1], SPACING[2]])


def test_dataset_resume_keeps_existing(tmp_path):
    write_phantom_dataset(tmp_path, 1, seed=0, shape=SHAPE)
    path = tmp_path / "images" / "case_000.nii.gz"
    mtime = path.stat().st_mtime_ns
    write_phantom_dataset(tmp_path, 2, seed=0, shape=SHAPE)
    assert path.stat().st_mtime_ns == mtime and (tmp_path / "images" / "case_001.nii.gz").exists()


def test_several_lesions_count_and_sizes():
    from scipy import ndimage

    radii = (1.0, 2.0, 4.0, 7.0)
    p = make_phantom((40, 128, 128), (2.0, 0.8, 0.8), seed=1, n_lesions=4, lesion_radii_mm=radii)
    lab, n = ndimage.label(p.label == 2, structure=np.ones((3, 3, 3)))
    assert n == p.meta["n_lesions"] == 4
    sizes = np.sort(np.bincount(lab.ravel())[1:])
    vox = 2.0 * 0.8 * 0.8
    assert sizes[0] <= 10  # a lesion a few voxels across
    # the largest: a ball of radius ~7 mm (±8 % radius jitter, discretisation)
    assert 0.6 * 4 / 3 * np.pi * 7**3 < sizes[-1] * vox < 1.4 * 4 / 3 * np.pi * 7**3
    q = make_phantom((40, 128, 128), (2.0, 0.8, 0.8), seed=1, n_lesions=4, lesion_radii_mm=radii)
    np.testing.assert_array_equal(p.label, q.label)  # deterministic
    assert make_phantom(SHAPE, SPACING, seed=0).meta["n_lesions"] == 1
    with pytest.raises(ValueError, match="lesion_radii_mm"):
        make_phantom(SHAPE, SPACING, n_lesions=3, lesion_radii_mm=(1.0, 2.0, 3.0, 4.0))
    with pytest.raises(ValueError, match="n_lesions"):
        make_phantom(SHAPE, SPACING, n_lesions=0)
