"""The instance-loss trainers (``nnUNetTrainerBlob``, ``nnUNetTrainerCCDiceCE``): maps made in the loader.

The data-loader transform must hand every deep-supervision scale maps downsampled with its target (an id
> 0 exactly where the scale's target holds the class), the loss must then never compute maps itself (no
warning), train and validation steps must run on CPU, ignore labels must stay out of every component, and
region-based datasets must be refused. The end-to-end ``nnUNetv2_train`` run is marked slow.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import (  # noqa: E402
    DownsampleSegForDSTransform,
)
from test_trainers import PATCH, initialized, make_trainer  # noqa: E402

import segbalance.trainers as trainers  # noqa: E402
from segbalance.monai_losses.instance_maps import component_ids, voronoi_regions  # noqa: E402
from segbalance.trainers.instance import InstanceMapsTransform  # noqa: E402

INSTANCE_TRAINERS = ["nnUNetTrainerBlob", "nnUNetTrainerCCDiceCE"]


def sample_segmentation(ignore: bool = False, seed: int = 0) -> torch.Tensor:
    """``(1, *PATCH)`` int16: an organ (1) with a large and two small lesions (2), optionally ignore (3)."""
    seg = torch.zeros(1, *PATCH, dtype=torch.int16)
    seg[0, 1:7, 2:14, 2:14] = 1
    seg[0, 2:6, 3:9, 3:9] = 2
    seg[0, 5:7, 11:13, 11:13] = 2
    seg[0, 1:2, 12:13, 3:4] = 2
    if ignore:
        seg[0, :, :, 15] = 3
    rng = np.random.default_rng(seed)
    shift = int(rng.integers(0, 2))
    return torch.roll(seg, shift, dims=-1)


def validation_pipeline(trainer):
    return trainer.get_validation_transforms(
        trainer._get_deep_supervision_scales(), is_cascaded=False, foreground_labels=[1, 2], regions=None,
        ignore_label=trainer.label_manager.ignore_label,
    )


def batch_of(trainer, n=2, ignore=False):
    pipeline = validation_pipeline(trainer)
    samples = [
        pipeline(image=torch.randn(1, *PATCH), segmentation=sample_segmentation(ignore, seed=i))
        for i in range(n)
    ]
    return {
        "data": torch.stack([s["image"] for s in samples]),
        "target": [
            torch.stack([s["segmentation"][k] for s in samples])
            for k in range(len(samples[0]["segmentation"]))
        ],
        "keys": [f"case{i}" for i in range(n)],
    }


@pytest.mark.parametrize("trainer_name", INSTANCE_TRAINERS)
def test_maps_are_made_before_deep_supervision_and_downsampled_with_the_target(results, trainer_name):
    trainer = make_trainer(getattr(trainers, trainer_name))
    trainer._build_loss()
    kind = trainer.instance_maps_spec["kind"]
    assert trainer.instance_maps_spec["channels"] == [1, 2]
    for pipeline in (
        validation_pipeline(trainer),
        trainer.get_training_transforms(
            PATCH, ((0, 0),) * 3, trainer._get_deep_supervision_scales(), (0, 1, 2), False,
            foreground_labels=[1, 2],
        ),
    ):
        steps = pipeline.transforms
        assert isinstance(steps[-1], DownsampleSegForDSTransform)
        assert isinstance(steps[-2], InstanceMapsTransform) and steps[-2].kind == kind
    seg = sample_segmentation()
    out = validation_pipeline(trainer)(image=torch.randn(1, *PATCH), segmentation=seg.clone())["segmentation"]
    assert isinstance(out, list) and len(out) == 4
    full = out[0]
    assert full.shape == (4, *PATCH) and full.dtype == torch.int16
    torch.testing.assert_close(full[0], seg[0])
    assert (full[1 + 0] == 0).all()  # background is not scored: no maps
    lesion = seg[0].numpy() == 2
    ids, n = component_ids(lesion)
    assert n == 3
    expected = ids if kind == "components" else voronoi_regions(ids, n, trainer.configuration_manager.spacing)
    np.testing.assert_array_equal(full[1 + 2].numpy(), expected)
    for scale in out:
        labels, maps = scale[0], scale[1:]
        for c in (1, 2):
            if kind == "components":
                assert torch.equal(maps[c] > 0, labels == c)
            else:
                assert bool((maps[c] > 0).all())
                held = torch.unique(maps[c][labels == c])
                assert set(held.tolist()) <= set(torch.unique(maps[c]).tolist())


@pytest.mark.parametrize("trainer_name", INSTANCE_TRAINERS)
@pytest.mark.parametrize("ignore", [False, True], ids=["labels", "ignore_label"])
def test_train_and_validation_steps_run_with_the_data_loader_maps(results, tmp_path, trainer_name, ignore):
    trainer = initialized(make_trainer(getattr(trainers, f"{trainer_name}_debug"), ignore=ignore), tmp_path)
    batch = batch_of(trainer, ignore=ignore)
    if ignore:
        maps = batch["target"][0][:, 1:]
        assert (maps[..., 15] == 0).all() or trainer.instance_maps_spec["kind"] == "voronoi"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the loss never computes maps itself here
        trainer.network.train()
        losses = [float(trainer.train_step(batch)["loss"]) for _ in range(3)]
        trainer.network.eval()
        val = trainer.validation_step(batch)
    assert all(np.isfinite(losses))
    assert np.isfinite(val["loss"]) and val["tp_hard"].shape == (2,)


@pytest.mark.parametrize("trainer_name", INSTANCE_TRAINERS)
def test_region_datasets_are_refused_by_name(results, trainer_name):
    trainer = make_trainer(getattr(trainers, trainer_name), regions=True)
    with pytest.raises(ValueError, match="region-based.*instance losses do not support region-based"):
        trainer._build_loss()


def test_transform_refuses_to_run_after_downsampling():
    transform = InstanceMapsTransform("components", 3, [1, 2])
    with pytest.raises(ValueError, match="before DownsampleSegForDSTransform"):
        transform(segmentation=[torch.zeros(1, 4, 4, dtype=torch.int16)])


@pytest.mark.slow
@pytest.mark.parametrize("trainer_name", INSTANCE_TRAINERS)
def test_instance_trainers_train_through_nnunetv2_train(tmp_path, trainer_name):
    from test_nnunet_e2e import DATASET, DATASET_ID, plan_train_predict, write_raw_dataset

    folder = write_raw_dataset(tmp_path / "raw")
    out, fold = plan_train_predict(tmp_path, DATASET_ID, DATASET, folder, f"{trainer_name}_debug")
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "without instance maps" not in log
