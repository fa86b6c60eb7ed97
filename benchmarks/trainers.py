"""Training-step throughput of every segbalance nnU-Net trainer against plain ``nnUNetTrainer``.

GPU only (CUDA + fp16 autocast, nnU-Net's own ``train_step``): for each trainer whose loss is registered,
one trainer is built in memory from a PlainConvUNet 3d_fullres plan (no dataset needed), its network,
optimizer and ``_build_loss()``; the steps of all trainers are interleaved A B C … A B C on the same
random batch, and iterations/s plus the ratio to ``nnUNetTrainer`` are reported.

    python benchmarks/trainers.py                          # CUDA: patch 128³, batch 2, 3 classes
    python benchmarks/trainers.py --patch 64 128 128 --steps 20
    python benchmarks/trainers.py --cpu-distance           # CPU: per-step cost of on-the-fly distances
    python benchmarks/trainers.py --cpu-instance           # CPU: blob / CC-DiceCE steps and loader cost

``--cpu-distance`` times the deep-supervised boundary and HD-DT losses (signed distance maps of every
scale's target computed in the step) against nnU-Net's ``DC_and_CE_loss`` on a CPU 2×3×64³ patch.
``--cpu-instance`` times ``train_step`` of ``nnUNetTrainerBlob`` and ``nnUNetTrainerCCDiceCE`` against
``nnUNetTrainer`` on the CPU (interleaved, same phantom-like batch: an organ, one large and four small
lesions; the instance trainers' targets carry the maps their data loader makes), and the data-loader cost
per batch: nnU-Net's training transforms per batch with and without the instance-maps transform.
Writes ``benchmarks/results/trainers-<device>.json``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, median, time_interleaved, write_json  # noqa: E402

from segbalance.trainers.plans import dataset_json, plainconv_plans  # noqa: E402


def plans(patch: list[int], batch_size: int, features: list[int] | None = None) -> dict:
    """nnU-Net's default-sized PlainConvUNet (features 32 → 320, 2 convolutions per stage, batch Dice), or
    one with ``features`` per stage (e.g. the shrunken network of ``compare_nnunet.py``'s CPU budgets)."""
    n = 6 if min(patch) >= 64 else 5
    features = features or [min(32 * 2**i, 320) for i in range(n)]
    return plainconv_plans("Dataset999_Bench", patch, batch_size, features, n_conv=2, batch_dice=True)


DATASET_JSON = dataset_json(num_training=1)


def build_trainer(cls, plan: dict, device: torch.device):
    p = copy.deepcopy(plan)
    p["continue_training"] = False
    trainer = cls(p, "3d_fullres", 0, copy.deepcopy(DATASET_JSON), device)
    trainer.network = trainer.build_network_architecture(
        trainer.plans_manager,
        trainer.configuration_manager,
        1,
        trainer.label_manager.num_segmentation_heads,
        True,
    ).to(device)
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    trainer.loss = trainer._build_loss()
    return trainer


def make_batch(trainer, patch: list[int], batch_size: int, device: torch.device) -> dict:
    g = torch.Generator(device="cpu").manual_seed(0)
    data = torch.randn(batch_size, 1, *patch, generator=g)
    target = torch.randint(0, 3, (batch_size, 1, *patch), generator=g).to(torch.int16)
    targets = []
    for scale in trainer._get_deep_supervision_scales():
        shape = [round(s * f) for s, f in zip(patch, scale)]
        targets.append(
            torch.nn.functional.interpolate(target.float(), size=shape, mode="nearest").to(torch.int16)
        )
    return {"data": data.to(device), "target": [t.to(device) for t in targets]}


def trainer_throughput(args) -> dict:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    import segbalance.trainers as trainers
    from segbalance.monai_losses import names

    device = torch.device("cuda")
    os.environ["nnUNet_compile"] = "false"
    plan = plans(args.patch, args.batch_size)
    registered = set(names())
    chosen = {"nnUNetTrainer": nnUNetTrainer}
    skipped = {}
    for name, loss in trainers.TRAINER_LOSSES.items():
        needed = {"compound": ["dfl", "dice"], "gdl_boundary": ["gdl_boundary", "gdl"]}.get(loss, [loss])
        missing = [n for n in needed if n not in registered]
        if missing:
            skipped[name] = f"loss {missing} not registered"
        else:
            chosen[name] = getattr(trainers, name)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["nnUNet_results"] = tmp
        built = {name: build_trainer(cls, plan, device) for name, cls in chosen.items()}
        batch = make_batch(built["nnUNetTrainer"], args.patch, args.batch_size, device)
        fns = {name: (lambda t=t: t.train_step(batch)) for name, t in built.items()}
        times = time_interleaved(fns, device, repeats=args.steps, warmup=2)
    base = median(times["nnUNetTrainer"])
    rows = {
        name: {
            "median_s": median(ts),
            "iterations_per_s": 1 / median(ts),
            "time_vs_nnUNetTrainer": median(ts) / base,
        }
        for name, ts in times.items()
    }
    for name, row in rows.items():
        print(
            f"{name:28s} {row['iterations_per_s']:7.2f} it/s  {row['time_vs_nnUNetTrainer']:5.2f}× step time"
        )
    return {
        "patch": args.patch,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "trainers": rows,
        "skipped": skipped,
    }


def cpu_distance_cost(args) -> dict:
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    from segbalance.nnunet_losses import build_nnunet_loss, deep_supervision_weights

    device = torch.device("cpu")
    patch = [64, 64, 64]
    scales = [[1, 1, 1], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], [0.125, 0.125, 0.125]]
    g = torch.Generator().manual_seed(0)
    shapes = [[round(p * s) for p, s in zip(patch, sc)] for sc in scales]
    logits = [torch.randn(2, 3, *s, generator=g, requires_grad=True) for s in shapes]
    grid = torch.stack(torch.meshgrid(*[torch.arange(64.0)] * 3, indexing="ij"))
    full = ((grid - 32).pow(2).sum(0) < 20**2).long() + ((grid - 36).pow(2).sum(0) < 4**2).long()
    target = full[None, None].repeat(2, 1, 1, 1, 1).float()
    targets = [
        torch.nn.functional.interpolate(target, size=s, mode="nearest").to(torch.int16) for s in shapes
    ]
    losses = {
        "nnunet DC_and_CE": DeepSupervisionWrapper(
            DC_and_CE_loss(
                {"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False},
                {},
                dice_class=MemoryEfficientSoftDiceLoss,
            ),
            deep_supervision_weights(len(scales)),
        )
    }
    for name in ("boundary", "hd_dt"):
        losses[name] = build_nnunet_loss(
            name, deep_supervision_scales=scales, spacing=(2.5, 0.8, 0.8), patch_size=patch
        )

    def step(loss):
        value = loss(logits, targets)
        value.backward()

    times = time_interleaved(
        {k: (lambda v=v: step(v)) for k, v in losses.items()}, device, repeats=args.steps
    )
    base = median(times["nnunet DC_and_CE"])
    rows = {
        k: {"median_ms": 1e3 * median(v), "ratio_vs_DC_and_CE": median(v) / base} for k, v in times.items()
    }
    for k, row in rows.items():
        print(f"{k:18s} {row['median_ms']:8.1f} ms  {row['ratio_vs_DC_and_CE']:6.2f}×")
    return {"patch": [2, 3, *patch], "deep_supervision_scales": scales, "losses": rows}


def phantom_label(patch: list[int], seed: int) -> torch.Tensor:
    """``(1, *patch)`` int16: an organ (1) holding one large lesion and four small ones (2)."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(float(n)) for n in patch], indexing="ij"))
    size = torch.tensor(patch, dtype=torch.float32)

    def ball(center, radius):
        radius = torch.as_tensor(radius, dtype=torch.float32)
        return (((grid - center.view(3, 1, 1, 1)) / radius.view(3, 1, 1, 1)) ** 2).sum(0) <= 1.0

    label = torch.zeros(patch, dtype=torch.int16)
    label[ball(size / 2, size * 0.4)] = 1
    label[ball(size * 0.45, size * 0.15)] = 2
    for _ in range(4):
        center = size * (0.3 + 0.4 * torch.rand(3, generator=g))
        label[ball(center, [1.0, 2.0, 2.0])] = 2
    return label[None]


def cpu_instance_cost(args) -> dict:
    import time

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    import segbalance.trainers as trainers

    device = torch.device("cpu")
    os.environ["nnUNet_compile"] = "false"
    patch, batch_size = list(args.patch), args.batch_size
    plan = plans(patch, batch_size, args.features)
    chosen = {
        "nnUNetTrainer": nnUNetTrainer,
        "nnUNetTrainerBlob": trainers.nnUNetTrainerBlob,
        "nnUNetTrainerCCDiceCE": trainers.nnUNetTrainerCCDiceCE,
    }
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(1, *patch, generator=g) for _ in range(batch_size)]
    labels = [phantom_label(patch, seed) for seed in range(batch_size)]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["nnUNet_results"] = tmp
        built = {name: build_trainer(cls, plan, device) for name, cls in chosen.items()}
        batches, loader = {}, {}
        for name, t in built.items():
            scales = t._get_deep_supervision_scales()
            val = t.get_validation_transforms(scales, foreground_labels=[1, 2])
            samples = [val(image=x.clone(), segmentation=y.clone()) for x, y in zip(images, labels)]
            batches[name] = {
                "data": torch.stack([s["image"] for s in samples]),
                "target": [torch.stack([s["segmentation"][k] for s in samples]) for k in range(len(scales))],
            }
            # data-loader cost per batch: nnU-Net's training transforms (spatial, intensity, DS), with the
            # instance maps for the instance trainers
            train = t.get_training_transforms(
                patch, t.configure_rotation_dummyDA_mirroring_and_inital_patch_size()[0], scales,
                (0, 1, 2), False, foreground_labels=[1, 2],
            )
            steps = getattr(train, "transforms", [])
            maps = [tr for tr in steps if type(tr).__name__ == "InstanceMapsTransform"]
            per_batch, maps_only = [], []
            for _ in range(args.loader_repeats):
                t0 = time.perf_counter()
                for x, y in zip(images, labels):
                    train(image=x.clone(), segmentation=y.clone())
                per_batch.append(time.perf_counter() - t0)
                if maps:
                    t0 = time.perf_counter()
                    for y in labels:
                        maps[0](segmentation=y.clone())
                    maps_only.append(time.perf_counter() - t0)
            loader[name] = {
                "training_transforms_s_per_batch": median(per_batch),
                **({"instance_maps_transform_s_per_batch": median(maps_only)} if maps_only else {}),
            }
        # the loss alone (forward + backward over the deep-supervision scales, same logits for all)
        g = torch.Generator().manual_seed(1)
        targets0 = batches["nnUNetTrainer"]["target"]
        logits = [torch.randn(batch_size, 3, *t.shape[2:], generator=g) for t in targets0]

        def loss_step(t, target):
            xs = [x.clone().requires_grad_(True) for x in logits]
            t.loss(xs, target).backward()

        fns = {name: (lambda t=t, b=batches[name]: t.train_step(b)) for name, t in built.items()}
        loss_fns = {name: (lambda t=t, b=batches[name]: loss_step(t, b["target"]))
                    for name, t in built.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # the losses never compute maps themselves here
            loss_times = time_interleaved(loss_fns, device, repeats=max(3, args.steps), warmup=1)
            times = time_interleaved(fns, device, repeats=args.steps, warmup=1)
    base_loss = median(loss_times["nnUNetTrainer"])
    base = median(times["nnUNetTrainer"])
    base_loader = loader["nnUNetTrainer"]["training_transforms_s_per_batch"]
    rows = {}
    for name, ts in times.items():
        rows[name] = {
            "median_s_per_iter": median(ts),
            "time_vs_nnUNetTrainer": median(ts) / base,
            **loader[name],
            "loader_vs_nnUNetTrainer": loader[name]["training_transforms_s_per_batch"] / base_loader,
            "loss_fwd_bwd_s": median(loss_times[name]),
            "loss_vs_nnUNetTrainer_DC_and_CE": median(loss_times[name]) / base_loss,
        }
        print(
            f"{name:24s} {median(ts):7.3f} s/iter {median(ts) / base:5.2f}×   loader "
            f"{loader[name]['training_transforms_s_per_batch']:6.3f} s/batch "
            f"({rows[name]['loader_vs_nnUNetTrainer']:4.2f}×)   "
            f"loss {1e3 * median(loss_times[name]):7.1f} ms "
            f"({rows[name]['loss_vs_nnUNetTrainer_DC_and_CE']:4.2f}×)"
        )
    return {
        "patch": patch,
        "batch_size": batch_size,
        "features": plan["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"],
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "label": "organ + one large (r = 0.15·patch) and four small (1×2×2 radii) lesions per sample",
        "trainers": rows,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, nargs=3, default=[128, 128, 128])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cpu-distance", action="store_true", help="CPU per-step cost of distance maps")
    parser.add_argument("--cpu-instance", action="store_true", help="CPU blob / CC-DiceCE steps, loader cost")
    parser.add_argument("--loader-repeats", type=int, default=5)
    parser.add_argument("--features", type=int, nargs="+", default=None,
                        help="--cpu-instance: features per stage (default nnU-Net's 32 → 320)")
    parser.add_argument("--note", default="", help="recorded in the JSON (e.g. what else ran on the machine)")
    args = parser.parse_args(argv)
    if args.cpu_instance:
        result = {"environment": environment(torch.device("cpu")), "note": args.note,
                  "cpu_instance": cpu_instance_cost(args)}
        print(write_json("trainers-instance-cpu.json", result))
        return 0
    if args.cpu_distance:
        result = {"environment": environment(torch.device("cpu")), "cpu_distance": cpu_distance_cost(args)}
        print(write_json("trainers-distance-cpu.json", result))
        return 0
    if not torch.cuda.is_available():
        print(
            "benchmarks/trainers.py measures nnU-Net training steps under CUDA + fp16 autocast and needs a "
            "GPU; none is available. (Use --cpu-distance for the CPU distance-map cost.)",
            file=sys.stderr,
        )
        return 2
    result = {"environment": environment(torch.device("cuda")), "throughput": trainer_throughput(args)}
    print(write_json("trainers-cuda.json", result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
