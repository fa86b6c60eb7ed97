"""``train(config) -> checkpoint path``: a MONAI UNet trained with any registered segbalance loss.

CUDA with AMP (``torch.autocast`` + ``GradScaler``) when present, CPU otherwise; DDP when launched by
``torchrun`` (``WORLD_SIZE > 1``: process group from the environment, ``DistributedSampler``).

Reproducibility: every random draw of an epoch is a function of ``(seed, epoch)`` (shuffling, the global
RNGs) or ``(seed, epoch, item)`` (the crop transforms, :class:`~segbalance.training.data.EpochSeededDataset`),
and loss schedules are functions of the epoch. A checkpoint ``last.pt`` written after every epoch (model,
optimizer, scaler, loss state, epoch, history, configuration) therefore resumes to exactly the weights and
history of an uninterrupted run. Checkpoints hold only tensors and plain values and are read with
``torch.load(weights_only=True)`` (:mod:`segbalance.training.checkpoint`).
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from segbalance.errors import UserError
from segbalance.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from segbalance.training.model import build_model, load_model  # noqa: F401 (re-exported, patched by tests)

__all__ = [
    "TrainConfig",
    "NonFiniteLossError",
    "train",
    "build_model",
    "load_model",
    "RESUMABLE_OPTIONS",
    "FIXED_OPTIONS",
    "check_resume_options",
]

#: options that ``--resume`` may change: how long, how fast and where to train, not what the run is
RESUMABLE_OPTIONS = (
    "epochs", "lr", "steps_per_epoch", "device", "amp", "num_workers", "progress", "compile_loss",
    "predict_test",
)
#: options fixed by the checkpoint: changing one on ``--resume`` is refused
FIXED_OPTIONS = (
    "data",
    "synthetic",
    "synthetic_shape",
    "loss",
    "loss_kwargs",
    "dim",
    "size",
    "channels",
    "batch_size",
    "samples_per_volume",
    "num_classes",
    "seed",
    "window",
    "label_map",
)


class NonFiniteLossError(FloatingPointError):
    """The training loss or the model's logits became NaN or infinite; the message names the loss, the
    epoch and the step."""


@dataclass
class TrainConfig:
    """Options of :func:`train` (the ``segbalance train`` flags have the same names)."""

    out: str = "segbalance_run"
    data: str | None = None  # folder with images/ + labels/; None: phantoms (``synthetic`` cases)
    synthetic: int = 8
    synthetic_shape: tuple[int, int, int] = (48, 64, 64)
    loss: str = "ce"
    loss_kwargs: dict = field(default_factory=dict)
    dim: int = 2
    size: tuple[int, ...] = (96, 96)  # 2D slice size or 3D patch size
    channels: tuple[int, ...] = (16, 32, 64, 128)
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    steps_per_epoch: int | None = None  # cap (None: one pass over the data)
    samples_per_volume: int = 4
    num_classes: int | None = None  # None: max label + 1
    seed: int = 0
    window: str | None = None  # intensity window (parse_window text or "zscore"); None: ct-abdomen / z-score
    label_map: str | None = None  # DICOM labels: "1=GTV,2=Lung_L" (value=segment/ROI name), as for convert
    predict_test: bool = True  # after training, predict the --data folder's test cases into <out>/pred
    resume: bool = False
    device: str | None = None  # None: cuda if available else cpu
    amp: bool | None = None  # None: on for CUDA
    num_workers: int = 0
    progress: bool = True
    compile_loss: bool = False  # torch.compile the loss math (segbalance.monai_losses.compile_loss)

    def __post_init__(self) -> None:
        if self.dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {self.dim}")
        self.size = tuple(int(s) for s in self.size)
        if len(self.size) == 1:
            self.size = self.size * self.dim
        if len(self.size) != self.dim:
            raise ValueError(f"size must have {self.dim} values for dim={self.dim}, got {self.size}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if self.samples_per_volume < 1:
            raise ValueError(f"samples_per_volume must be >= 1, got {self.samples_per_volume}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 0:
            raise ValueError(f"steps_per_epoch must be >= 0, got {self.steps_per_epoch}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if isinstance(self.loss_kwargs, str):
            self.loss_kwargs = json.loads(self.loss_kwargs)
        self.channels = tuple(int(c) for c in self.channels)
        self.synthetic_shape = tuple(int(s) for s in self.synthetic_shape)
        if self.window is not None:
            from segbalance.training.data import resolve_window

            resolve_window(True, self.window)  # a bad window fails here, naming the text

    def record(self) -> dict:
        """The options as plain JSON values (tuples as lists, ``data`` as an absolute path)."""
        record = json.loads(json.dumps(asdict(self)))
        if self.data is not None:
            record["data"] = str(Path(self.data).resolve())
        return record


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (global state some transforms draw from)
    random.seed(seed)


def _init_distributed(device: str | None) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and device != "cpu"
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        if use_cuda:
            torch.cuda.set_device(local)
            return dist.get_rank(), world, torch.device("cuda", local)
        return dist.get_rank(), world, torch.device("cpu")
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch.cuda.is_available() is False on this machine")
    return 0, 1, dev


def _loss_fn(name: str, kwargs: dict, compile: bool = False) -> torch.nn.Module:
    """The registered loss; its own NaN/Inf check of the logits is off (the loop checks, naming the step).
    ``compile``: its math under ``torch.compile``, in place (same module, same state_dict)."""
    from segbalance.monai_losses import compile_loss, get

    loss = get(name, **{"check_finite": False, **kwargs})
    return compile_loss(loss) if compile else loss


def _flag(option: str) -> str:
    """The ``segbalance train`` flag of a :class:`TrainConfig` field."""
    flags = {"amp": "--no-amp", "progress": "--no-progress", "predict_test": "--no-predict"}
    return flags.get(option, "--" + option.replace("_", "-"))


def check_resume_options(checkpoint: Path, saved: dict, cfg: TrainConfig) -> None:
    """Refuse to resume with an option that the checkpoint fixes (see :data:`FIXED_OPTIONS`).

    Raises:
        UserError: one line naming each changed option with its value in the checkpoint and now.
    """
    now = cfg.record()
    changed = [
        f"{_flag(k)} {saved.get(k)!r} -> {now[k]!r}"
        for k in FIXED_OPTIONS
        if k != "num_classes" and saved.get(k) != now[k]
    ]
    if changed:
        raise UserError(
            f"{checkpoint}: cannot resume with changed options: {'; '.join(changed)} (checkpoint value -> "
            f"new value); only {', '.join(_flag(k) for k in RESUMABLE_OPTIONS)} may change on --resume"
        )


def _restore(ckpt: dict, last: Path, cfg: TrainConfig, num_classes: int, model, optimizer, scaler, loss_fn):
    if cfg.num_classes is not None and ckpt["info"]["num_classes"] != num_classes:
        raise UserError(
            f"{last}: cannot resume with changed options: --num-classes {ckpt['info']['num_classes']!r} -> "
            f"{num_classes!r} (checkpoint value -> new value)"
        )
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        loss_fn.load_state_dict(ckpt.get("loss", {}))
    except (KeyError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise CheckpointError(f"{last}: cannot restore the training state ({first})") from None
    for group in optimizer.param_groups:  # --resume --lr X: X from now on
        group["lr"] = cfg.lr


def _non_finite_message(cfg: TrainConfig, what: str, epoch: int, step: int) -> str:
    kwargs = f" {json.dumps(cfg.loss_kwargs)}" if cfg.loss_kwargs else ""
    return (
        f"loss {cfg.loss!r}{kwargs}: {what} at epoch {epoch + 1} step {step + 1}; "
        f"lower the learning rate or check the data (the checkpoint of the last finished epoch is kept: "
        f"--resume --lr ... continues from it)"
    )


def train(config: TrainConfig | dict) -> Path:
    """Train and return the path of the last checkpoint (``<out>/last.pt``); see :class:`TrainConfig`.

    Raises:
        ValueError: bad options, an unknown loss name (listing the known ones), unusable data (every bad
            case with its file), a checkpoint that cannot be loaded, or ``resume`` with a changed fixed
            option (:data:`FIXED_OPTIONS`).
        FileNotFoundError: ``data`` or the checkpoint to resume does not exist.
        NonFiniteLossError: the loss or the logits became NaN/inf (message: loss, epoch, step).
    """
    from monai.data import DataLoader, list_data_collate
    from tqdm.auto import tqdm

    from segbalance.monai_losses.schedules import set_schedulers_epoch
    from segbalance.training.data import (
        EpochSeededDataset,
        build_train_dataset,
        derived_seed,
        is_ct,
        load_cases,
        synthetic_root,
    )

    cfg = config if isinstance(config, TrainConfig) else TrainConfig(**config)
    loss_fn = _loss_fn(cfg.loss, cfg.loss_kwargs, cfg.compile_loss)  # fail early on a bad name/kwargs
    rank, world, device = _init_distributed(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:  # a checkpoint half-written by a killed run never counts and does not stay behind
        from segbalance.atomic import remove_stale_temps

        remove_stale_temps(out)
    last = out / "last.pt"
    ckpt = None
    if cfg.resume:
        if not last.exists():
            raise FileNotFoundError(f"{last}: no checkpoint to resume from (train once without --resume)")
        ckpt = load_checkpoint(last, map_location=device)
        check_resume_options(last, ckpt["info"].get("config", {}), cfg)

    _seed_everything(cfg.seed)
    if cfg.data is None:
        root = out / "synthetic"
        if rank == 0:
            synthetic_root(out, cfg.synthetic, cfg.seed, cfg.synthetic_shape)
        if world > 1:
            torch.distributed.barrier()
    else:
        root = Path(cfg.data)
    cases = load_cases(root, num_classes=cfg.num_classes, label_map=cfg.label_map)
    ct = is_ct([c["image"] for c in cases])
    num_classes = cfg.num_classes or int(max(int(c["label"].max()) for c in cases)) + 1
    instance_maps = None
    if getattr(loss_fn, "instance_maps", None):  # instance losses: their maps made per sample in the loader
        from segbalance.preprocessing.transforms import InstanceMapsd

        instance_maps = InstanceMapsd.for_loss(loss_fn, "label", num_classes=num_classes)
    dataset = EpochSeededDataset(
        build_train_dataset(
            cases, cfg.dim, cfg.size, ct, cfg.samples_per_volume, window=cfg.window,
            instance_maps=instance_maps,
        ),
        seed=cfg.seed,
    )

    sampler = None
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    generator = torch.Generator()
    per_volume = cfg.dim == 3
    loader = DataLoader(
        dataset,
        batch_size=max(1, cfg.batch_size // cfg.samples_per_volume) if per_volume else cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=False,
        num_workers=cfg.num_workers,
        collate_fn=list_data_collate,
        generator=generator,
    )

    _seed_everything(cfg.seed)  # the initial weights depend on the seed only
    model = build_model(cfg.dim, num_classes, cfg.channels).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    amp = (device.type == "cuda") if cfg.amp is None else bool(cfg.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss_fn = loss_fn.to(device)
    info = {
        "loss": cfg.loss,
        "loss_kwargs": cfg.loss_kwargs,
        "dim": cfg.dim,
        "size": list(cfg.size),
        "channels": list(cfg.channels),
        "num_classes": num_classes,
        "ct": ct,
        "window": cfg.window,
        "config": cfg.record(),
    }
    start = 0
    history: list[dict] = []
    if ckpt is not None:
        _restore(ckpt, last, cfg, num_classes, model, optimizer, scaler, loss_fn)
        start = ckpt["epoch"] + 1
        history = list(ckpt.get("history", []))
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    net = model.module if world > 1 else model

    for epoch in range(start, cfg.epochs):
        model.train()
        loss_fn.train()
        # every random draw of this epoch follows from (seed, epoch): identical after --resume
        epoch_seed = derived_seed(cfg.seed, epoch, rank)
        _seed_everything(epoch_seed)
        generator.manual_seed(derived_seed(cfg.seed, epoch))
        dataset.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        alphas = set_schedulers_epoch(loss_fn, epoch)  # per-epoch loss schedules (boundary weight α)
        total, n = 0.0, 0
        steps = len(loader) if cfg.steps_per_epoch is None else min(len(loader), cfg.steps_per_epoch)
        bar = tqdm(
            total=steps,
            desc=f"{cfg.loss} epoch {epoch + 1}/{cfg.epochs}",
            disable=not cfg.progress or rank != 0,
            leave=False,
        )
        batches = iter(loader) if steps else iter(())
        for step in range(steps):
            batch = next(batches)
            image, label = batch["image"].to(device), batch["label"].to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=amp):
                logits = model(image)
            logits = logits.float()
            if not bool(torch.isfinite(logits).all()):
                what = "the model's logits became NaN/Inf"
                raise NonFiniteLossError(_non_finite_message(cfg, what, epoch, step))
            if "instances" in batch:
                loss = loss_fn(logits, label, batch["instances"].to(device))
            else:
                loss = loss_fn(logits, label)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLossError(_non_finite_message(cfg, f"the loss became {value}", epoch, step))
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += value
            n += 1
            bar.update(1)
            bar.set_postfix(loss=f"{total / n:.4f}")
        del batches
        bar.close()
        history.append(
            {"epoch": epoch + 1, "loss": total / max(n, 1), **({"alpha": alphas[0]} if alphas else {})}
        )
        if rank == 0:
            state = {
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "loss": loss_fn.state_dict(),
                "epoch": epoch,
                "info": info,
                "history": history,
            }
            save_checkpoint(last, state)
    if rank == 0:
        from segbalance.atomic import atomic_write_text

        atomic_write_text(out / "history.json", json.dumps(history, indent=1))
        if cfg.data is not None and cfg.predict_test:
            _predict_test_cases(last, Path(cfg.data), out / "pred", device, cfg)
    return last


def _predict_test_cases(checkpoint: Path, data: Path, pred_dir: Path, device: torch.device,
                        cfg: TrainConfig) -> None:
    """Predict the test cases of ``data`` (``imagesTs/``, or images without a label) into ``pred_dir``, where
    ``segbalance evaluate --pred NAME=<out>/pred`` reads them; nothing when there are none."""
    from segbalance.training.predict import find_inputs, predict_folder

    if find_inputs(data):
        predict_folder(checkpoint, data, pred_dir, device=str(device), amp=cfg.amp, progress=cfg.progress)
