"""End to end on CPU: raw dataset → nnU-Net plan/preprocess → train a segbalance trainer → predict → Dice.

Runs nnU-Net's own command-line entry points (from the venv's ``bin``) in subprocesses with fresh
``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results`` folders and ``nnUNet_extTrainer`` set by
``segbalance.trainers.register``. Training is two epochs of two iterations on a shrunken network: the
test checks that the pipeline works (files exist, Dice is a number in [0, 1]), not that it learns.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")
pytest.importorskip("nnunetv2")

BIN = Path(sys.executable).parent
DATASET_ID = 987
DATASET = f"Dataset{DATASET_ID:03d}_SegBalanceE2E"
SHAPE = (24, 40, 40)  # z, y, x
SPACING = (2.0, 1.0, 1.0)  # z, y, x (mm)


def _ball(shape, center, radii) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) <= 1.0


def make_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like volume with a large 'organ' (label 1) and a small 'lesion' (label 2) inside it."""
    rng = np.random.default_rng(seed)
    center = np.array(SHAPE) / 2 + rng.uniform(-2, 2, size=3)
    organ = _ball(SHAPE, center, (6, 12, 12))
    lesion = _ball(SHAPE, center + rng.uniform(-3, 3, size=3) * (0.3, 1, 1), (1.5, 3, 3)) & organ
    label = np.zeros(SHAPE, np.uint8)
    label[organ] = 1
    label[lesion] = 2
    image = rng.normal(-100, 20, SHAPE) + 140 * organ + 120 * lesion
    return image.astype(np.float32), label


def write_raw_dataset(
    raw: Path, n_cases: int = 5, dataset: str = DATASET, labels: dict | None = None, extra: dict | None = None
) -> Path:
    """``n_cases`` of :func:`make_case` as an nnU-Net raw dataset; ``labels``/``extra`` for dataset.json."""
    folder = raw / dataset
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for i in range(n_cases):
        image, label = make_case(i)
        for array, path in (
            (image, folder / "imagesTr" / f"case{i:03d}_0000.nii.gz"),
            (label, folder / "labelsTr" / f"case{i:03d}.nii.gz"),
        ):
            img = sitk.GetImageFromArray(array)
            img.SetSpacing(SPACING[::-1])  # SimpleITK wants (x, y, z)
            sitk.WriteImage(img, str(path))
    dataset_json = {
        "channel_names": {"0": "CT"},
        "labels": labels or {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        **(extra or {}),
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder


def shrink_plans(plans_file: Path) -> None:
    """Tiny patch, batch and network so that CPU training takes seconds (what nnU-Net users do by hand)."""
    plans = json.loads(plans_file.read_text())
    cfg = plans["configurations"]["3d_fullres"]
    cfg["batch_size"] = 2
    cfg["patch_size"] = [16, 32, 32]
    arch = cfg["architecture"]["arch_kwargs"]
    n = 3
    arch["n_stages"] = n
    arch["features_per_stage"] = [4, 8, 16]
    for key in ("kernel_sizes", "strides", "n_conv_per_stage"):
        arch[key] = arch[key][:n]
    arch["strides"] = [[1, 1, 1], [1, 2, 2], [2, 2, 2]]
    arch["n_conv_per_stage_decoder"] = arch["n_conv_per_stage_decoder"][: n - 1]
    plans_file.write_text(json.dumps(plans, indent=2))


def dice(pred: np.ndarray, truth: np.ndarray, label: int) -> float:
    p, t = pred == label, truth == label
    denom = p.sum() + t.sum()
    return 1.0 if denom == 0 else float(2 * (p & t).sum() / denom)


def run(cmd: list[str], env: dict, log: Path) -> None:
    result = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log.write_text(result.stdout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}")


def e2e_trainer() -> tuple[str, dict]:
    """The DFL debug trainer; while the "dfl" loss is not registered, the JSON trainer with CE."""
    from segbalance.monai_losses import names

    if "dfl" in names():
        return "nnUNetTrainerDFL_debug", {}
    return "nnUNetTrainerSegBalance_debug", {"SEGBALANCE_LOSS": json.dumps({"name": "ce"})}


def plan_train_predict(
    tmp_path: Path, dataset_id: int, dataset: str, folder: Path, trainer: str, extra_env: dict | None = None
) -> tuple[Path, Path]:
    """nnU-Net's plan+preprocess (plans shrunk), train ``trainer`` on CPU, predict two training images.

    Returns ``(prediction folder, fold folder)``; asserts the checkpoint, the segbalance log line and the
    predicted files exist.
    """
    from segbalance.trainers.discovery import register

    pre, res = tmp_path / "preprocessed", tmp_path / "results"
    env = dict(os.environ)
    env.pop("nnUNet_extTrainer", None)
    register(env)
    env.update(
        nnUNet_raw=str(folder.parent),
        nnUNet_preprocessed=str(pre),
        nnUNet_results=str(res),
        nnUNet_n_proc_DA="1",
        nnUNet_compile="false",
        nnUNet_def_n_proc="1",
        OMP_NUM_THREADS="2",
        **(extra_env or {}),
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    run(
        [
            str(BIN / "nnUNetv2_plan_and_preprocess"),
            "-d",
            str(dataset_id),
            "-c",
            "3d_fullres",
            "--verify_dataset_integrity",
            "-np",
            "1",
            "-npfp",
            "1",
        ],
        env,
        logs / "plan.txt",
    )
    plans_file = pre / dataset / "nnUNetPlans.json"
    assert plans_file.is_file()
    shrink_plans(plans_file)

    env["nnUNet_n_proc_DA"] = "0"  # data augmentation in the training process (planning needs >= 1)
    run(
        [str(BIN / "nnUNetv2_train"), str(dataset_id), "3d_fullres", "0", "-tr", trainer, "-device", "cpu"],
        env,
        logs / "train.txt",
    )
    fold = res / dataset / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    train_log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "segbalance loss:" in train_log

    out, images = tmp_path / "pred", tmp_path / "to_predict"
    images.mkdir()
    for i in range(2):
        shutil.copy(folder / "imagesTr" / f"case{i:03d}_0000.nii.gz", images)
    run(
        [
            str(BIN / "nnUNetv2_predict"),
            "-i",
            str(images),
            "-o",
            str(out),
            "-d",
            str(dataset_id),
            "-c",
            "3d_fullres",
            "-f",
            "0",
            "-tr",
            trainer,
            "-device",
            "cpu",
            "--disable_tta",
            "-npp",
            "1",
            "-nps",
            "1",
        ],
        env,
        logs / "predict.txt",
    )
    for i in range(2):
        assert (out / f"case{i:03d}.nii.gz").is_file()
    return out, fold


@pytest.mark.slow
def test_plan_train_predict_dice(tmp_path: Path) -> None:
    folder = write_raw_dataset(tmp_path / "raw")
    trainer, extra_env = e2e_trainer()
    out, _ = plan_train_predict(tmp_path, DATASET_ID, DATASET, folder, trainer, extra_env)
    for i in range(2):
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"case{i:03d}.nii.gz")))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / f"case{i:03d}.nii.gz")))
        assert pred.shape == truth.shape
        assert set(np.unique(pred)) <= {0, 1, 2}
        for label in (1, 2):
            value = dice(pred, truth, label)
            assert np.isfinite(value) and 0.0 <= value <= 1.0
