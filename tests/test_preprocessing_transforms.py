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

from segbalance.io.volume import Volume
from segbalance.io.volumes import write_volume
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


# --- MONAI conventions: readers, channel-less labels, argument checks, invertible crops (issue 13.7) ---


def oblique_label(vol: Volume) -> np.ndarray:
    label = np.zeros(vol.shape, np.uint8)
    label[1:3, 2, 2] = 1  # (z, y, x): foreground only at z = 1, 2
    return label


@pytest.mark.parametrize("fmt", [".nrrd", ".mhd", ".nii.gz", "dicom-series", "dicom-file"])
def test_load_imaged_with_volume_reader_equals_load_volumed(tmp_path, fmt):
    from monai.transforms import LoadImaged

    from segbalance.io.dicom import write_dicom_series
    from segbalance.preprocessing.transforms import VolumeReader

    vol = oblique_volume()
    if fmt == "dicom-series":
        write_dicom_series(vol, tmp_path / "series", rescale_slope=0.5, rescale_intercept=-10.0)
        path = tmp_path / "series"
    elif fmt == "dicom-file":
        from pydicom.data import get_testdata_file

        path = get_testdata_file("CT_small.dcm")
    else:
        path = write_volume(vol, tmp_path / f"case{fmt}")
    reader = VolumeReader()
    assert reader.verify_suffix(str(path)) and not reader.verify_suffix("photo.png")
    ours = LoadVolumed("image", ensure_channel_first=True)({"image": str(path)})["image"]
    monai = LoadImaged("image", reader=reader, ensure_channel_first=True)({"image": str(path)})["image"]
    assert isinstance(monai, MetaTensor) and monai.shape == ours.shape and monai.dtype == torch.float32
    torch.testing.assert_close(monai.as_tensor(), ours.as_tensor())
    torch.testing.assert_close(monai.affine, ours.affine)
    np.testing.assert_allclose(monai.meta["pixdim"][1:4], ours.meta["pixdim"][1:4])
    assert monai.meta["space"] == "RAS" and monai.meta["filename_or_obj"] == str(path)
    if fmt in (".nrrd", ".mhd", "dicom-series"):  # geometry of the written volume, voxel (2, 3, 1)
        lps = np.asarray(vol.to_sitk().TransformIndexToPhysicalPoint((2, 3, 1)))
        ras = monai.affine.numpy() @ np.array([2, 3, 1, 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-4)


def test_volume_reader_stacks_several_files_as_channels(tmp_path):
    from monai.transforms import LoadImage

    from segbalance.preprocessing.transforms import VolumeReader

    vol = oblique_volume()
    a = write_volume(vol, tmp_path / "a.nrrd")
    b = write_volume(vol.with_array(vol.array * 2), tmp_path / "b.mha")
    x = LoadImage(reader=VolumeReader(), image_only=True)([str(a), str(b)])
    assert x.shape == (2, 6, 5, 4)
    torch.testing.assert_close(x[1], 2 * x[0])
    c = write_volume(Volume(vol.array[:, :, :5], vol.spacing, vol.origin, vol.direction), tmp_path / "c.nrrd")
    with pytest.raises(ValueError, match=r"c\.nrrd: shape \(5, 5, 4\).*cannot stack as channels"):
        LoadImage(reader=VolumeReader(), image_only=True)([str(a), str(c)])


def test_volume_to_slices_accepts_labels_without_channel_axis():
    image = MetaTensor(torch.arange(6 * 5 * 4, dtype=torch.float32).reshape(1, 6, 5, 4))
    label = torch.zeros(6, 5, 4, dtype=torch.uint8)  # (X, Y, Z), no channel
    label[2, 2, 1:3] = 1
    t = VolumeToSlicesd(["image", "label"], axis=2, label_key="label", foreground_only=True)
    out = t({"image": image, "label": label})
    assert [s["image"].meta["slice_index"] for s in out] == [1, 2]
    assert out[0]["image"].shape == (1, 6, 5) and out[0]["label"].shape == (6, 5)
    assert int(out[0]["label"].sum()) == 1
    # the label only as selector, with a channel axis of 1
    out = VolumeToSlicesd("image", axis=0, label_key="label", foreground_only=True)(
        {"image": image, "label": label[None]})
    assert [s["image"].meta["slice_index"] for s in out] == [2]
    selector = VolumeToSlicesd("image", label_key="label", foreground_only=True)
    for bad in (label[:, :, :3], torch.stack([label, label])):
        with pytest.raises(ValueError, match=r"label data\['label'\] must be \(X, Y, Z\)"):
            selector({"image": image, "label": bad})


@pytest.mark.parametrize(("kwargs", "argument"), [
    ({"patch_size": (4, 4)}, "patch_size"),
    ({"patch_size": (4, 0, 4)}, "patch_size"),
    ({"patch_size": (4.5, 4, 4)}, "patch_size"),
    ({"patch_size": "444"}, "patch_size"),
    ({"mode": "tiles"}, "mode"),
    ({"fg_share": 1.5}, "fg_share"),
    ({"fg_share": float("nan")}, "fg_share"),
    ({"num_samples": 0}, "num_samples"),
    ({"num_samples": 2.5}, "num_samples"),
    ({"overlap": 1.0, "mode": "grid"}, "overlap"),
    ({"label_key": None}, "label_key"),
])
def test_volume_to_patches_checks_arguments_at_construction(kwargs, argument):
    args = {"keys": ["image", "label"], "patch_size": (4, 4, 4), "label_key": "label", **kwargs}
    with pytest.raises(ValueError, match=argument):
        VolumeToPatchesd(**args)


def test_volume_to_patches_random_with_channel_less_label():
    image = MetaTensor(torch.randn(1, 8, 8, 8))
    label = torch.zeros(8, 8, 8, dtype=torch.uint8)
    label[7, 7, 7] = 2
    t = VolumeToPatchesd(["image", "label"], (4, 4, 4), num_samples=4, fg_share=1.0, label_key="label")
    t.set_random_state(1)
    for p in t({"image": image, "label": label}):
        assert p["image"].meta["patch_kind"] == "fg:2" and p["label"].shape == (4, 4, 4)
        assert int(p["label"].max()) == 2


def _loaded(tmp_path):
    vol = oblique_volume()
    write_volume(vol, tmp_path / "img.nrrd")
    write_volume(vol.with_array(oblique_label(vol)), tmp_path / "lab.nrrd")
    item = {"image": str(tmp_path / "img.nrrd"), "label": str(tmp_path / "lab.nrrd")}
    load = LoadVolumed(["image", "label"], ensure_channel_first=True, dtype=(np.float32, np.uint8))
    return item, load


def test_invertd_puts_a_patch_prediction_back_in_place(tmp_path):
    from monai.data import decollate_batch
    from monai.transforms import Invertd

    item, load = _loaded(tmp_path)
    pipeline = Compose([load, VolumeToPatchesd(["image", "label"], (4, 4, 2), mode="grid", overlap=0.5)])
    full = load(item)
    loader = DataLoader(Dataset([item], transform=pipeline), batch_size=64)
    batch = next(iter(loader))
    batch["pred"] = batch["image"] * 2 + 1  # a "prediction" for every patch, same metadata
    invert = Invertd("pred", transform=pipeline, orig_keys="image")
    seen = torch.zeros(full["image"].shape)
    for sample in decollate_batch(batch):
        start = sample["image"].meta["patch_start"]
        restored = invert(sample)["pred"]
        assert restored.shape == full["image"].shape == (1, 6, 5, 4)
        torch.testing.assert_close(restored.affine, full["image"].affine)
        region = (slice(None),) + tuple(slice(int(s), int(s) + n) for s, n in zip(start, (4, 4, 2)))
        torch.testing.assert_close(restored.as_tensor()[region], full["image"].as_tensor()[region] * 2 + 1)
        outside = torch.ones_like(restored.as_tensor(), dtype=torch.bool)
        outside[region] = False
        assert bool((restored.as_tensor()[outside] == 0).all())
        seen[region] = 1
    assert bool(seen.all())  # the grid covers the volume


def test_slice_inverse_restores_the_volume_and_its_affine(tmp_path):
    from monai.transforms import Invertd

    item, load = _loaded(tmp_path)
    slicer = VolumeToSlicesd(["image", "label"], axis=1)
    pipeline = Compose([load, slicer])
    full = load(item)
    slices = pipeline(item)
    assert len(slices[3]["image"].applied_operations) == 1
    back = slicer.inverse(slices[3])  # the transform's own inverse
    assert back["label"].shape == back["image"].shape == (1, 6, 5, 4)
    torch.testing.assert_close(back["image"].as_tensor()[:, :, 3], full["image"].as_tensor()[:, :, 3])
    assert float(back["image"].as_tensor()[:, :, :3].abs().sum()) == 0.0
    torch.testing.assert_close(back["image"].affine, full["image"].affine)
    assert back["image"].applied_operations == []
    # Invertd on a prediction for slice 2, through the whole pipeline
    sample = dict(slices[2], pred=slices[2]["image"] + 100)
    restored = Invertd("pred", transform=pipeline, orig_keys="image")(sample)["pred"]
    torch.testing.assert_close(restored.as_tensor()[:, :, 2], full["image"].as_tensor()[:, :, 2] + 100)
    assert float(restored.as_tensor()[:, :, 3:].abs().sum()) == 0.0
    # a channel-less label comes back channel-less
    label = torch.zeros(6, 5, 4)
    label[1, 2, 3] = 1
    one = VolumeToSlicesd("label", axis=2)
    piece = one({"label": label})[3]
    assert piece["label"].shape == (6, 5)
    torch.testing.assert_close(one.inverse(piece)["label"].as_tensor(), label)


def test_signed_distance_mapd_is_a_preprocessing_transform_and_losses_need_no_monai():
    import subprocess
    import sys

    from segbalance.preprocessing import SignedDistanceMapd

    assert SignedDistanceMapd.__module__ == "segbalance.preprocessing.transforms"
    code = ("import sys; sys.modules['monai'] = None\n"  # any MONAI import fails
            "import segbalance.monai_losses as m, torch\n"
            "loss = m.get('boundary')\n"
            "x = torch.randn(1, 2, 6, 6, 6); y = torch.randint(0, 2, (1, 1, 6, 6, 6))\n"
            "assert torch.isfinite(loss(x, y))\n"
            "import importlib.util as u; assert u.find_spec('segbalance.monai_losses.transforms') is None\n")
    subprocess.run([sys.executable, "-c", code], check=True)
