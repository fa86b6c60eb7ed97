"""segbalance train --data checks its cases like convert (every bad case listed with its file), the intensity
window comes from the slices presets, 3D patches use the shared VolumeToPatchesd sampler."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from segbalance.preprocessing.slices import parse_window, window_intensities
from segbalance.preprocessing.transforms import VolumeToPatchesd
from segbalance.synthetic import write_phantom_dataset
from segbalance.training import TrainConfig, train
from segbalance.training.data import (
    EpochSeededDataset,
    build_train_dataset,
    intensity_transform,
    load_cases,
)

SHAPE = (12, 32, 32)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    write_phantom_dataset(root, 4, seed=0, shape=SHAPE)
    return root


@pytest.fixture
def data(tmp_path, phantoms):
    root = tmp_path / "data"
    shutil.copytree(phantoms, root)
    return root


def _write(array: np.ndarray, path, like: sitk.Image | None = None) -> None:
    """Write ``array``, with the geometry of ``like`` (when the shapes match) or a default one."""
    image = sitk.GetImageFromArray(array)
    if like is not None and like.GetSize() == image.GetSize():
        image.CopyInformation(like)
    sitk.WriteImage(image, str(path))


def test_every_bad_case_is_listed_with_its_file(data):
    labels = data / "labels"
    reference = sitk.ReadImage(str(labels / "case_000.nii.gz"))
    good = sitk.GetArrayFromImage(reference)
    _write(good.astype(np.float32) + 0.5, labels / "case_000.nii.gz", reference)  # non-integer label
    _write(good[:, :16], labels / "case_001.nii.gz", reference)  # another grid
    # truncated label: an uncompressed NIfTI cut in half (SimpleITK alone would fill it with zeros)
    (labels / "case_002.nii.gz").unlink()
    _write(good, labels / "case_002.nii", sitk.ReadImage(str(data / "images" / "case_002.nii.gz")))
    raw = (labels / "case_002.nii").read_bytes()
    (labels / "case_002.nii").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError) as err:
        load_cases(data)
    message = str(err.value)
    assert message.startswith(f"data {data}: 3 of 4 cases cannot be used for training: ")
    assert "\n" not in message
    assert f"{labels / 'case_000.nii.gz'}: label has non-integer values" in message
    assert f"{labels / 'case_001.nii.gz'}: shape" in message
    assert f"{labels / 'case_002.nii'}: unreadable or truncated" in message
    with pytest.raises(ValueError, match="3 of 4 cases cannot be used"):  # nothing is trained on them
        train(TrainConfig(out=str(data.parent / "run"), data=str(data), epochs=1, progress=False))
    assert not (data.parent / "run" / "last.pt").exists()


def test_labels_above_num_classes_are_refused(data):
    with pytest.raises(ValueError, match=r"case_000\.nii\.gz: label values \[2\] are not among the known"):
        load_cases(data, num_classes=2)


def test_empty_images_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(ValueError) as err:
        load_cases(tmp_path)
    assert str(err.value) == (
        f"data {tmp_path}: no labelled case (an image in images/ with a label of the same name in "
        f"labels/) found"
    )


def test_a_2d_image_is_a_clear_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    _write(np.zeros((32, 32), np.float32), tmp_path / "images" / "slice.nii.gz")
    _write(np.zeros((32, 32), np.uint8), tmp_path / "labels" / "slice.nii.gz")
    with pytest.raises(ValueError) as err:
        load_cases(tmp_path)
    image = tmp_path / "images" / "slice.nii.gz"
    assert f"{image}: a 2D image (shape (32, 32)); segbalance train needs 3D volumes" in str(err.value)


def test_ct_window_is_the_slices_preset():
    hu = np.random.default_rng(0).uniform(-1200, 1500, (1, 4, 8, 8)).astype(np.float32)
    for window in (None, "ct-lung", "40,400"):
        got = np.asarray(intensity_transform(True, window)({"image": hu})["image"])
        expected = window_intensities(hu, parse_window(window or "ct-abdomen"))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    got = np.asarray(intensity_transform(False, "p1,99")({"image": hu})["image"])
    np.testing.assert_allclose(got, window_intensities(hu, parse_window("p1,99")), rtol=0, atol=1e-6)
    mri = np.asarray(intensity_transform(False)({"image": hu})["image"])  # default for MRI: z-score
    assert abs(float(mri.mean())) < 1e-5 and abs(float(mri.std()) - 1) < 1e-4
    with pytest.raises(ValueError, match="window 'abdomen'"):
        TrainConfig(window="abdomen")


def test_3d_patches_use_the_shared_sampler_and_depend_on_seed_epoch_item(phantoms):
    cases = load_cases(phantoms)
    inner = build_train_dataset(cases, 3, (8, 16, 16), ct=True, samples_per_volume=4)
    assert any(isinstance(t, VolumeToPatchesd) for t in inner.transform.transforms)
    dataset = EpochSeededDataset(inner, seed=0)
    first = dataset[1]
    dataset[0], dataset[2]  # other items in between change nothing
    again = dataset[1]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, again))
    # half of the patches are centred on a foreground class (here organ or lesion): they contain it
    assert sum(bool((p["label"] > 0).any()) for p in first) >= 2
    dataset.set_epoch(1)
    other = dataset[1]
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(first, other))
