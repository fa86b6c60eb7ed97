"""Small nnU-Net v2 plans and dataset.json files, for building trainers without planning a data set.

``nnUNetv2_plan_and_preprocess`` writes ``nnUNetPlans.json`` from a data set's fingerprint; checks that
only need a trainer and its network (``segbalance selfcheck``, the trainer tests, ``benchmarks/trainers.py``)
write the same structure directly: one ``3d_fullres`` configuration with a ``PlainConvUNet``.

>>> p = plainconv_plans("Dataset990_Doc", patch=[16, 32, 32], batch_size=2, features=[4, 8, 16])
>>> cfg = p["configurations"]["3d_fullres"]
>>> cfg["patch_size"], cfg["architecture"]["arch_kwargs"]["strides"]
([16, 32, 32], [[1, 1, 1], [2, 2, 2], [2, 2, 2]])
>>> dataset_json()["labels"]
{'background': 0, 'organ': 1, 'lesion': 2}
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["plainconv_plans", "dataset_json"]

#: CT-like foreground intensity statistics (CTNormalization clips and scales with these)
CT_INTENSITIES = {"max": 200.0, "mean": 40.0, "median": 40.0, "min": -50.0, "percentile_00_5": -10.0,
                  "percentile_99_5": 170.0, "std": 25.0}


def plainconv_plans(
    dataset_name: str,
    patch: Sequence[int],
    batch_size: int,
    features: Sequence[int],
    *,
    strides: Sequence[Sequence[int]] | None = None,
    n_conv: int = 1,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    image_shape: Sequence[int] | None = None,
    batch_dice: bool = False,
) -> dict:
    """An nnU-Net v2 plans dict with one ``3d_fullres`` configuration: a ``PlainConvUNet`` with
    ``len(features)`` stages (3×3×3 kernels, ``n_conv`` convolutions per stage, instance norm, leaky ReLU;
    nnU-Net's defaults), ``strides`` per stage (default: 1 then 2 in every axis), CT normalisation.

    Args:
        dataset_name: ``DatasetXXX_Name``.
        patch: (z, y, x) patch size; ``batch_size``: patches per batch.
        features: feature maps per stage (deep supervision gives ``len(features) - 1`` outputs).
        strides: per-stage strides, (z, y, x) each.
        n_conv: convolutions per encoder and decoder stage.
        spacing: (z, y, x) target spacing in mm; ``image_shape``: median image size (default ``patch``).
        batch_dice: nnU-Net's ``batch_dice`` flag of the configuration.
    """
    n = len(features)
    strides = [list(s) for s in strides] if strides is not None else [[1, 1, 1]] + [[2, 2, 2]] * (n - 1)
    if len(strides) != n:
        raise ValueError(f"strides must have one entry per stage ({n}), got {len(strides)}")
    shape = [int(s) for s in (image_shape or patch)]
    resampling = {"order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": dataset_name,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [float(s) for s in spacing],
        "original_median_shape_after_transp": shape,
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": int(batch_size),
                "patch_size": [int(p) for p in patch],
                "median_image_size_in_voxels": [float(s) for s in shape],
                "spacing": [float(s) for s in spacing],
                "normalization_schemes": ["CTNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, **resampling},
                "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, **resampling},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, **resampling},
                "architecture": {
                    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": {
                        "n_stages": n,
                        "features_per_stage": [int(f) for f in features],
                        "conv_op": "torch.nn.modules.conv.Conv3d",
                        "kernel_sizes": [[3, 3, 3]] * n,
                        "strides": strides,
                        "n_conv_per_stage": [n_conv] * n,
                        "n_conv_per_stage_decoder": [n_conv] * (n - 1),
                        "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                        "dropout_op": None,
                        "dropout_op_kwargs": None,
                        "nonlin": "torch.nn.LeakyReLU",
                        "nonlin_kwargs": {"inplace": True},
                    },
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
                "batch_dice": bool(batch_dice),
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": dict(CT_INTENSITIES)},
    }


def dataset_json(num_training: int = 2, ignore: bool = False, regions: bool = False) -> dict:
    """``dataset.json`` of a CT data set with an organ (1) and a lesion (2); ``ignore`` adds the ignore
    label 3; ``regions`` makes it region-based (``whole`` = 1 ∪ 2, ``lesion``; ``regions_class_order``)."""
    labels: dict = {"background": 0, "organ": 1, "lesion": 2}
    if regions:
        labels = {"background": 0, "whole": [1, 2], "lesion": 2}
    if ignore:
        labels["ignore"] = 3
    out = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": num_training,
           "file_ending": ".nii.gz"}
    if regions:
        out["regions_class_order"] = [1, 2]
    return out
