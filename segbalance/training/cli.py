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


#: defaults of the options (the flags default to None so that ``--resume`` can tell what was given)
DEFAULTS = {
    "data": None,
    "synthetic": 8,
    "out": "segbalance_run",
    "loss": "ce",
    "loss_kwargs": {},
    "dim": 2,
    "size": None,  # by dim: 96,96 (2D) or 32,64,64 (3D)
    "channels": (16, 32, 64, 128),
    "epochs": 10,
    "batch_size": 8,
    "lr": 1e-3,
    "steps_per_epoch": None,
    "samples_per_volume": 4,
    "num_classes": None,
    "seed": 0,
    "window": None,
    "label_map": None,
    "predict_test": True,
    "device": None,
    "amp": None,
    "num_workers": 0,
    "progress": True,
    "compile_loss": False,
}
DEFAULT_SIZE = {2: (96, 96), 3: (32, 64, 64)}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a MONAI UNet with a segbalance loss (2D slices or 3D patches)",
        description="Train a MONAI UNet on an images/ + labels/ folder (or phantoms). With --resume, options "
        "not given are taken from the checkpoint; only --epochs, --lr, --steps-per-epoch, --device, "
        "--no-amp, --num-workers, --no-progress, --compile-loss, --no-predict may differ from it. "
        "Multi-GPU: torchrun --nproc_per_node N -m segbalance.cli train ...",
    )
    p.add_argument("--data", help="folder with images/ and labels/ (any format read_volume reads)")
    p.add_argument("--synthetic", type=int, help="without --data: number of phantoms (default 8)")
    p.add_argument("--out", help="run folder (checkpoint last.pt, history.json; default segbalance_run)")
    p.add_argument("--loss", help="registered loss name (segbalance losses lists them; default ce)")
    p.add_argument("--loss-kwargs", type=_json, help="JSON constructor arguments, e.g. '{\"beta\": 1}'")
    p.add_argument("--dim", type=int, choices=(2, 3), help="2: axial slices (default), 3: patches")
    p.add_argument(
        "--size", type=_ints, help="slice size (2D, default 96,96) or patch size (3D, default 32,64,64)"
    )
    p.add_argument("--channels", type=_ints, help="UNet channels per level (default 16,32,64,128)")
    p.add_argument("--epochs", type=int, help="total number of epochs (default 10)")
    p.add_argument("--batch-size", type=int, help="samples per step (default 8)")
    p.add_argument(
        "--lr", type=float, help="Adam learning rate (default 1e-3; --resume: the checkpoint's unless given)"
    )
    p.add_argument("--steps-per-epoch", type=int, help="cap on the steps of an epoch (default: all)")
    p.add_argument("--samples-per-volume", type=int, help="3D: patches per volume and epoch (default 4)")
    p.add_argument("--num-classes", type=int, help="default: max label + 1")
    p.add_argument("--seed", type=int, help="seed of every random draw (default 0)")
    p.add_argument(
        "--window",
        help="intensity window: ct-abdomen (default for CT), ct-lung, ct-brain, ct-bone, CENTER,WIDTH, "
        "pLOW,HIGH (percentiles), or zscore (default otherwise)",
    )
    p.add_argument("--label-map", help="DICOM-SEG/RTSTRUCT labels: VALUE=NAME,… (e.g. 1=GTV,2=Lung_L), "
                   "segments/ROIs by name, case-insensitive")
    p.add_argument("--no-predict", dest="predict_test", action="store_const", const=False,
                   help="after training, do not predict the --data test cases (imagesTs/) into OUT/pred")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument(
        "--no-amp", dest="amp", action="store_const", const=False, help="no mixed precision on CUDA"
    )
    p.add_argument("--num-workers", type=int, help="DataLoader worker processes (default 0)")
    p.add_argument(
        "--no-progress", dest="progress", action="store_const", const=False, help="no progress bar"
    )
    p.add_argument(
        "--compile-loss", action="store_const", const=True, help="run the loss math under torch.compile"
    )
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt (see above)")
    p.set_defaults(func=run)


def options(args: argparse.Namespace) -> dict:
    """TrainConfig keyword arguments: the flags given, then (with ``--resume``) the checkpoint's
    configuration, then :data:`DEFAULTS`."""
    from pathlib import Path

    from segbalance.training.checkpoint import load_checkpoint

    given = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k, None) is not None}
    values = dict(DEFAULTS)
    last = Path(given.get("out", DEFAULTS["out"])) / "last.pt"
    if args.resume and last.exists():
        saved = load_checkpoint(last)["info"].get("config", {})
        values.update({k: v for k, v in saved.items() if k in DEFAULTS and k != "out"})
    values.update(given)
    if values["size"] is None:
        values["size"] = DEFAULT_SIZE[values["dim"]]
    return values


def run(args: argparse.Namespace) -> int:
    from segbalance.training import TrainConfig, train

    path = train(TrainConfig(resume=args.resume, **options(args)))
    print(f"checkpoint: {path}")
    return 0
