"""InstanceMapsd: the MONAI transform that adds the instance losses' maps, in a user's Compose and in
``segbalance train``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("monai")

from monai.data import MetaTensor, list_data_collate  # noqa: E402
from monai.transforms import Compose, EnsureTyped  # noqa: E402

from segbalance.monai_losses import get  # noqa: E402
from segbalance.monai_losses.instance_maps import instance_maps  # noqa: E402
from segbalance.preprocessing import InstanceMapsd  # noqa: E402


def label_volume():
    label = torch.zeros(1, 6, 10, 10, dtype=torch.long)
    label[0, 1:5, 1:6, 1:6] = 1
    label[0, 2:4, 2:4, 2:4] = 2
    label[0, 4, 8, 8] = 2
    return label


@pytest.mark.parametrize("kind", ["components", "voronoi"])
def test_maps_equal_the_losses_own_and_the_loss_does_not_warn(kind):
    name = "blob" if kind == "components" else "cc_dice_ce"
    loss = get(name)
    transform = Compose([EnsureTyped(keys="label"), InstanceMapsd.for_loss(loss, "label", num_classes=3)])
    samples = [transform({"label": label_volume()}) for _ in range(2)]
    batch = list_data_collate(samples)
    assert batch["instances"].shape == (2, 3, 6, 10, 10) and batch["instances"].dtype == torch.int64
    onehot = torch.nn.functional.one_hot(batch["label"][:, 0].long(), 3).movedim(-1, 1)
    expected = instance_maps(onehot, kind, channels=[1, 2])
    torch.testing.assert_close(batch["instances"].as_tensor(), expected)
    logits = torch.randn(2, 3, 6, 10, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        value = loss(logits, batch["label"], batch["instances"])
    torch.testing.assert_close(value, get(name)(logits, batch["label"]))


def test_spacing_from_the_metatensor_and_binary_and_onehot_labels():
    line = torch.zeros(1, 3, 9)
    line[0, 0, 0] = 1
    line[0, 2, 8] = 1
    affine = torch.diag(torch.tensor([10.0, 1.0, 1.0, 1.0]))
    out = InstanceMapsd("label", "voronoi", num_classes=1)({"label": MetaTensor(line, affine=affine)})
    regions = out["instances"]
    assert isinstance(regions, MetaTensor) and regions.shape == (1, 3, 9)
    assert (regions[0, 0] == 1).all() and (regions[0, 2] == 2).all()  # rows 10 mm apart
    onehot = torch.stack([1 - line[0], line[0]])
    both = InstanceMapsd("label", "components", include_background=True)({"label": onehot.numpy()})
    assert both["instances"][1].max() == 2 and both["instances"][0].max() == 1


def test_errors_name_the_transform_and_argument():
    with pytest.raises(ValueError, match="InstanceMapsd: kind"):
        InstanceMapsd("label", "blobs")
    with pytest.raises(ValueError, match="InstanceMapsd: num_classes is required"):
        InstanceMapsd("label")({"label": torch.zeros(1, 4, 4)})
    with pytest.raises(ValueError, match=r"InstanceMapsd: label values must lie in \[0, 1\]"):
        InstanceMapsd("label", num_classes=2)({"label": torch.full((1, 4, 4), 2)})
    with pytest.raises(ValueError, match="reads no instance maps"):
        InstanceMapsd.for_loss(get("dice"))


def test_segbalance_train_feeds_the_maps_to_the_loss(tmp_path):
    from segbalance.synthetic import write_phantom_dataset
    from segbalance.training import TrainConfig, train
    from segbalance.training.checkpoint import load_checkpoint

    root = tmp_path / "phantoms"
    write_phantom_dataset(root, 2, seed=0, shape=(12, 32, 32))
    cfg = TrainConfig(out=str(tmp_path / "run"), data=str(root), dim=3, size=(8, 16, 16),
                      samples_per_volume=2,
                      loss="cc_dice_ce", epochs=1, channels=(4, 8, 16), batch_size=4, steps_per_epoch=2,
                      progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        for category in (DeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", category)
        path = train(cfg)
    history = load_checkpoint(path)["history"]
    assert np.isfinite(history[0]["loss"])
