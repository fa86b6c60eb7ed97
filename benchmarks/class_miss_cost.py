"""What missing a class costs under each trainer's loss, on the patches the 3D nnU-Net comparison trains on.

``benchmarks/compare_nnunet.py`` finds, at its CPU budget, that the CE-based trainers never predict the
lesions while GDL finds all of them and may lose the organ. This script measures the loss side of that
(no training): on nnU-Net-sized patches (24×64×64) of the comparison's multi-lesion phantoms, centred on
the lesions, it evaluates each loss on confident predictions (logit +10 for the predicted class, −10
otherwise) that are right everywhere except

* ``organ_missed``: organ voxels predicted as background;
* ``lesions_missed``: lesion voxels predicted as organ (the mistake of a network that has not yet learned
  the lesion);

and reports ``loss(mistake) − loss(perfect)`` for both and their ratio ``organ_missed / lesions_missed``:
how much more (ratio > 1) or less (< 1) the loss cares about the organ than about the lesions. The
baseline is nnU-Net's own ``DC_and_CE_loss`` as ``nnUNetTrainer`` builds it (batch Dice, no background,
smooth 1e-5); the others are the registered losses with the trainers' arguments (their defaults).

    python benchmarks/class_miss_cost.py     # seconds; writes benchmarks/results/class_miss_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from compare_nnunet import N_LESIONS, SHAPE, SPACING  # noqa: E402

PATCH = (24, 64, 64)
#: trainer → registered loss (segbalance.trainers.table), the baseline is nnU-Net's DC_and_CE_loss
LOSSES = {"nnUNetTrainer": None, "nnUNetTrainerCELoss": "ce", "nnUNetTrainerDFL": "dfl",
          "nnUNetTrainerDCE": "dce", "nnUNetTrainerFocal": "focal", "nnUNetTrainerRecall": "recall",
          "nnUNetTrainerCEL1": "ce_l1", "nnUNetTrainerCEKL": "ce_kl", "nnUNetTrainerGDL": "gdl",
          "nnUNetTrainerCombo": "combo"}


def patches(seeds: list[int]) -> torch.Tensor:
    """One patch per seed, ``(N, 1, *PATCH)`` int64, centred on the mean lesion position (clipped)."""
    from segbalance import synthetic

    out = []
    for seed in seeds:
        label = synthetic.make_phantom(shape=SHAPE, spacing=SPACING, seed=seed, n_lesions=N_LESIONS).label
        centre = np.argwhere(label == 2).mean(0).round().astype(int)
        start = [int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, PATCH, label.shape)]
        out.append(label[tuple(slice(a, a + p) for a, p in zip(start, PATCH))])
    return torch.as_tensor(np.stack(out)[:, None].astype(np.int64))


def confident_logits(target: torch.Tensor, n_classes: int = 3) -> torch.Tensor:
    """+10 for the target class, −10 for the others."""
    onehot = torch.nn.functional.one_hot(target[:, 0], n_classes).movedim(-1, 1).float()
    return onehot * 20 - 10


def build(name: str | None):
    if name is None:
        from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
        from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

        return DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                              weight_ce=1, weight_dice=1, dice_class=MemoryEfficientSoftDiceLoss)
    from segbalance.monai_losses.registry import get

    return get(name)


def costs(loss, target: torch.Tensor) -> dict:
    organ_missed = target.clone()
    organ_missed[organ_missed == 1] = 0
    lesions_missed = target.clone()
    lesions_missed[lesions_missed == 2] = 1
    with torch.no_grad():
        base = float(loss(confident_logits(target), target))
        organ = float(loss(confident_logits(organ_missed), target)) - base
        lesion = float(loss(confident_logits(lesions_missed), target)) - base
    return {"perfect": base, "organ_missed": organ, "lesions_missed": lesion,
            "ratio_organ_to_lesions": organ / lesion if lesion else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(4)))
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "class_miss_cost.json")
    args = ap.parse_args(argv)
    target = patches(args.seeds)
    counts = torch.bincount(target.flatten(), minlength=3).tolist()
    rows = {trainer: costs(build(name), target) for trainer, name in LOSSES.items()}
    print(f"patches {len(args.seeds)} × {PATCH}, voxels background/organ/lesion {counts}")
    print("| trainer | organ missed | lesions missed | ratio organ / lesions |\n|---|---:|---:|---:|")
    for trainer, r in rows.items():
        print(f"| {trainer} | {r['organ_missed']:.4f} | {r['lesions_missed']:.4f} | "
              f"{r['ratio_organ_to_lesions']:.2f} |")
    args.json.write_text(json.dumps({"python": platform.python_version(), "torch": torch.__version__,
                                     "patch": PATCH, "seeds": args.seeds, "voxels_per_class": counts,
                                     "losses": {t: n or "nnU-Net DC_and_CE_loss" for t, n in LOSSES.items()},
                                     "rows": rows}, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
