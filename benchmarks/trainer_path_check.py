"""Is the trainer path right? A real nnU-Net batch through each trainer's loss, checked against the loss.

For each trainer, on the comparison's preprocessed dataset (``benchmarks/compare_nnunet.py``'s work folder)
and its shrunken plans: nnU-Net builds the trainer, its data loader and network as ``nnUNetv2_train`` does;
one training batch is drawn and passed through the network, and the script records

* ``label_order``: dataset.json's labels, nnU-Net's ``foreground_labels`` and the label values in the
  batch's targets (the class the loss sees as channel ``c`` is dataset label ``c``), the lesion's share of
  the voxels per deep-supervision scale;
* ``loss``: the trainer's loss on ``(output, target)`` and ``Σ_k w_k L(output_k, target_k)`` with ``L`` the
  registered loss built alone (``segbalance.monai_losses.get`` with the table's arguments, the plan's
  ``batch_dice`` and each scale's spacing) and nnU-Net's deep-supervision weights ``w_k``: equal means the
  adapter hands the loss what it should;
* ``gradient``: after ``backward``, the gradient norm of the whole network (nnU-Net clips at 12) and of the
  segmentation head's weights of each class (the lesion's must not be 0), on CPU (no AMP).

    python benchmarks/trainer_path_check.py --work benchmarks/work/compare_nnunet/cpulong \\
        --trainers DFL HDDT Combo DFLDC HDDTDiceCE ComboBeta09
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASET = "Dataset761_SegBalanceLesions"


def check(trainer_name: str, fold: int, seed: int) -> dict:
    import numpy as np
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    from segbalance.monai_losses import get
    from segbalance.nnunet_losses import accepts_spacing, batch_dice_kwargs, deep_supervision_weights
    from segbalance.trainers.table import trainer_specs

    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - nnU-Net's augmentation draws from the legacy global state
    trainer = get_trainer_from_args(DATASET, "3d_fullres", fold, trainer_name, device=torch.device("cpu"))
    trainer.initialize()
    loader, _ = trainer.get_dataloaders()
    batch = next(loader)
    data, target = batch["data"], batch["target"]
    lm = trainer.label_manager
    out: dict = {"trainer": trainer_name, "fold": fold, "patch": list(data.shape[2:])}
    out["label_order"] = {
        "dataset_json": trainer.dataset_json["labels"],
        "foreground_labels": [int(v) for v in lm.foreground_labels],
        "target_values": sorted(int(v) for v in torch.unique(target[0])),
        "lesion_share_per_scale": [float((t == 2).float().mean()) for t in target],
    }
    trainer.network.train()
    output = trainer.network(data)
    value = trainer.loss(output, target)
    spec = trainer_specs()[trainer_name]
    batch_dice = trainer.configuration_manager.batch_dice
    kwargs = batch_dice_kwargs(spec.loss, copy.deepcopy(spec.kwargs), batch_dice)
    weights = deep_supervision_weights(len(output))
    spacing = trainer.configuration_manager.spacing
    patch = trainer.configuration_manager.patch_size
    reference = 0.0
    for w, o, t in zip(weights, output, target):
        if w == 0:
            continue
        scale_kwargs = dict(kwargs)
        if accepts_spacing(spec.loss):
            scale_kwargs["spacing"] = tuple(s * p / n for s, p, n in zip(spacing, patch, o.shape[2:]))
        reference = reference + float(w) * get(spec.loss, **scale_kwargs)(o, t)
    out["loss"] = {"trainer": float(value), "standalone": float(reference),
                   "deep_supervision_weights": [float(w) for w in weights]}
    value.backward()
    grads = [p.grad.norm() for p in trainer.network.parameters() if p.grad is not None]
    head = trainer.network.decoder.seg_layers[-1].weight.grad  # (classes, features, 1, 1, 1)
    out["gradient"] = {"network_norm": float(torch.stack(grads).norm()), "clip_at": 12.0,
                       "head_norm_per_class": [float(head[c].norm()) for c in range(head.shape[0])]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="compare_nnunet.py's WORK/<budget> folder")
    ap.add_argument("--trainers", nargs="+", default=["DFL", "HDDT", "Combo"])
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "trainer_path_check.json")
    args = ap.parse_args(argv)
    pre = args.work / "preprocessed"
    if not (pre / DATASET / "nnUNetPlans.json").is_file():
        ap.error(f"--work: {pre / DATASET / 'nnUNetPlans.json'} not found (run compare_nnunet.py first)")
    scratch = tempfile.mkdtemp(prefix="trainer_path_")
    os.environ.update(nnUNet_raw=str(args.work / "raw"), nnUNet_preprocessed=str(pre),
                      nnUNet_results=scratch, nnUNet_n_proc_DA="0", nnUNet_compile="false")
    import torch

    from segbalance.trainers.discovery import register

    torch.set_num_threads(1)
    register()
    rows = []
    for t in args.trainers:
        name = t if t.startswith("nnUNetTrainer") else f"nnUNetTrainer{t}"
        row = check(name, args.fold, args.seed)
        rows.append(row)
        print(f"{name}: loss {row['loss']['trainer']:.6f} (alone {row['loss']['standalone']:.6f}), labels "
              f"{row['label_order']['foreground_labels']}, head grad per class "
              f"{[round(g, 5) for g in row['gradient']['head_norm_per_class']]}, "
              f"network grad {row['gradient']['network_norm']:.3f}", flush=True)
    args.json.write_text(json.dumps({"work": str(args.work), "rows": rows}, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
