"""``segbalance train``: train a MONAI UNet with any registered loss (see docs/training.md)."""

from __future__ import annotations

import argparse
import json


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 96,96 or 16x32x32, got {text!r}") from None


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--loss-kwargs is not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"--loss-kwargs must be a JSON object, got {text!r}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a MONAI UNet with a segbalance loss (2D slices or 3D patches)",
        description="Train a MONAI UNet on an images/ + labels/ folder (or phantoms). "
        "Multi-GPU: torchrun --nproc_per_node N -m segbalance.cli train ...",
    )
    p.add_argument("--data", help="folder with images/ and labels/ (any format read_volume reads)")
    p.add_argument("--synthetic", type=int, default=8, help="without --data: number of phantoms (default 8)")
    p.add_argument("--out", default="segbalance_run", help="run folder (checkpoint last.pt, history.json)")
    p.add_argument("--loss", default="ce", help="registered loss name (segbalance losses lists them)")
    p.add_argument(
        "--loss-kwargs", type=_json, default={}, help="JSON constructor arguments, e.g. '{\"beta\": 1}'"
    )
    p.add_argument("--dim", type=int, choices=(2, 3), default=2, help="2: axial slices, 3: patches")
    p.add_argument(
        "--size",
        type=_ints,
        default=None,
        help="slice size (2D, default 96,96) or patch size (3D, default 32,64,64)",
    )
    p.add_argument("--channels", type=_ints, default=(16, 32, 64, 128), help="UNet channels per level")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--num-classes", type=int, default=None, help="default: max label + 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segbalance.training import TrainConfig, train

    size = args.size or ((96, 96) if args.dim == 2 else (32, 64, 64))
    cfg = TrainConfig(
        out=args.out,
        data=args.data,
        synthetic=args.synthetic,
        loss=args.loss,
        loss_kwargs=args.loss_kwargs,
        dim=args.dim,
        size=size,
        channels=args.channels,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        steps_per_epoch=args.steps_per_epoch,
        num_classes=args.num_classes,
        seed=args.seed,
        device=args.device,
        amp=False if args.no_amp else None,
        resume=args.resume,
    )
    path = train(cfg)
    print(f"checkpoint: {path}")
    return 0
