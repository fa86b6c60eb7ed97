"""MONAI transforms: LoadVolumed agrees with MONAI's own readers; slices, patches and proportions work
in ``monai.data.Dataset``/``DataLoader`` and keep the metadata."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, LoadImage

from segbalance.preprocessing.io import Volume, write_volume
from segbalance.preprocessing.transforms import (
    LabelProportionsd,
    LoadVolumed,
    VolumeToPatchesd,
    VolumeToSlicesd,
)

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


def oblique_volume() -> Volume:
    c, s = np.cos(0.4), np.sin(0.4)
    direction = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    return Volume(array, spacing=(3.0, 0.5, 0.7), origin=(10.0, 20.0, -5.0),
                  direction=tuple(direction.ravel()))


def test_load_volumed_matches_monai_nibabel_reader():
    path = str(NIBABEL_DATA / "anatomical.nii")
    ref = LoadImage(image_only=True)(path)
    ours = LoadVolumed("image")({"image": path})["image"]
    assert isinstance(ours, MetaTensor)
    torch.testing.assert_close(ours.as_tensor(), ref.as_tensor().float())
    torch.testing.assert_close(ours.affine, ref.affine)
    np.testing.assert_allclose(ours.meta["pixdim"][1:4], ref.meta["pixdim"][1:4])
    np.testing.assert_array_equal(ours.meta["spatial_shape"], ref.meta["spatial_shape"])
    assert ours.meta["filename_or_obj"] == path


@pytest.mark.parametrize("ext", [".mhd", ".nrrd"])
def test_load_volumed_affine_maps_voxels_to_ras_positions(tmp_path, ext):
    vol = oblique_volume()
    path = write_volume(vol, tmp_path / f"case{ext}")
    x = LoadVolumed("image", ensure_channel_first=True)({"image": str(path)})["image"]
    assert x.shape == (1, 6, 5, 4)  # channel, then (x, y, z) like MONAI's ITKReader
    assert float(x[0, 2, 3, 1]) == float(vol.array[1, 3, 2])
    # the physical point of voxel (i, j, k) = (2, 3, 1) from ITK, in RAS
    image = vol.to_sitk()
    lps = np.asarray(image.TransformIndexToPhysicalPoint((2, 3, 1)))
    ras = x.affine.numpy() @ np.array([2, 3, 1, 1.0])
    np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-6)
    np.testing.assert_allclose(x.meta["pixdim"][1:4], [0.7, 0.5, 3.0])


def test_volume_to_slices_shifts_affine_and_flattens_in_dataloader(tmp_path):
    vol = oblique_volume()
    write_volume(vol, tmp_path / "img.nii.gz")
    label = np.zeros(vol.shape, np.uint8)
    label[1:3, 2, 2] = 1  # only z = 1, 2 have foreground
    write_volume(vol.with_array(label), tmp_path / "lab.nii.gz")
    item = {"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "lab.nii.gz")}
    load = LoadVolumed(["image", "label"], ensure_channel_first=True, dtype=(np.float32, np.uint8))
    pipeline = Compose([load, VolumeToSlicesd(["image", "label"], axis=2)])
    slices = pipeline(item)
    assert len(slices) == 4 and slices[1]["image"].shape == (1, 6, 5)
    full = load(item)["image"]
    torch.testing.assert_close(slices[3]["image"].as_tensor(), full[:, :, :, 3].as_tensor())
    expected = full.affine.numpy() @ np.array([0, 0, 3, 1.0])  # origin of slice 3
    np.testing.assert_allclose(slices[3]["image"].affine.numpy()[:3, 3], expected[:3], atol=1e-6)
    assert slices[3]["image"].meta["slice_index"] == 3
    fg = Compose([load, VolumeToSlicesd(["image", "label"], axis=2, label_key="label", foreground_only=True)])
    loader = DataLoader(Dataset([item, item], transform=fg), batch_size=8)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 1, 6, 5)  # 2 volumes x 2 foreground slices
    assert batch["image"].meta["slice_index"].tolist() == [1, 2, 1, 2]


def test_volume_to_patches_grid_and_random():
    image = MetaTensor(torch.arange(8 * 8 * 4, dtype=torch.float32).reshape(1, 8, 8, 4))
    label = torch.zeros(1, 8, 8, 4, dtype=torch.uint8)
    label[0, 7, 0, 3] = 1  # one voxel in a corner
    grid = VolumeToPatchesd(["image", "label"], (4, 4, 4), mode="grid")({"image": image, "label": label})
    assert len(grid) == 4
    assert sum(int(p["label"].sum()) for p in grid) == 1
    rand = VolumeToPatchesd(["image", "label"], (4, 4, 4), num_samples=6, fg_share=0.5, label_key="label")
    rand.set_random_state(0)
    out = rand({"image": image, "label": label})
    kinds = [p["image"].meta["patch_kind"] for p in out]
    assert kinds.count("fg:1") == 3
    for p in out:
        if p["image"].meta["patch_kind"] == "fg:1":
            assert int(p["label"].sum()) == 1
        start = p["image"].meta["patch_start"]
        torch.testing.assert_close(p["image"].as_tensor(),
                                   image[:, start[0]:start[0] + 4, start[1]:start[1] + 4, :].as_tensor())
    with pytest.raises(ValueError, match="smaller than patch_size"):
        VolumeToPatchesd("image", (16, 4, 4), mode="grid")({"image": image})


def test_label_proportions_hand_computed_and_ignore_index():
    label = torch.tensor([[[0, 0, 1, 2], [2, 2, 255, 255]]])
    out = LabelProportionsd("label", num_classes=3, ignore_index=255)({"label": label})
    torch.testing.assert_close(out["label_proportions"], torch.tensor([2 / 6, 1 / 6, 3 / 6]))
    with pytest.raises(ValueError, match=r"values outside 0..2"):
        LabelProportionsd("label", num_classes=3)({"label": label})
    with pytest.raises(ValueError, match="non-integer"):
        LabelProportionsd("label", num_classes=3)({"label": torch.tensor([0.5])})
