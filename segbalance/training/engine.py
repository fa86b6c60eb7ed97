"""``train(config) -> checkpoint path``: a MONAI UNet trained with any registered segbalance loss.

CUDA with AMP (``torch.autocast`` + ``GradScaler``) when present, CPU otherwise; DDP when launched by
``torchrun`` (``WORLD_SIZE > 1``: process group from the environment, ``DistributedSampler``); a checkpoint
``last.pt`` every epoch (model, optimizer, scaler, epoch, RNG states, loss name and kwargs, config) that
``resume=True`` continues from; a :class:`NonFiniteLossError` naming the epoch, step and loss when the
loss turns NaN or infinite.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = ["TrainConfig", "NonFiniteLossError", "train", "build_model", "load_model"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the loss, the epoch and the step."""


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
    resume: bool = False
    device: str | None = None  # None: cuda if available else cpu
    amp: bool | None = None  # None: on for CUDA
    num_workers: int = 0
    progress: bool = True

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
        if isinstance(self.loss_kwargs, str):
            self.loss_kwargs = json.loads(self.loss_kwargs)
        self.channels = tuple(int(c) for c in self.channels)
        self.synthetic_shape = tuple(int(s) for s in self.synthetic_shape)


def build_model(dim: int, num_classes: int, channels: tuple[int, ...]) -> torch.nn.Module:
    """MONAI ``UNet`` (1 input channel, ``num_classes`` logits, stride 2 between levels, 1 residual unit)."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=dim,
        in_channels=1,
        out_channels=num_classes,
        channels=channels,
        strides=(2,) * (len(channels) - 1),
        num_res_units=1,
    )


def load_model(checkpoint: str | os.PathLike, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The model of a checkpoint written by :func:`train`, in eval mode, and the checkpoint's ``info``."""
    ckpt = torch.load(checkpoint, map_location=device, weights_only=False)
    info = ckpt["info"]
    model = build_model(info["dim"], info["num_classes"], tuple(info["channels"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), info


def _rng_state() -> dict:
    numpy_state = np.random.get_state()  # noqa: NPY002 (the global state MONAI transforms are seeded from)
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    return 0, 1, torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _loss_fn(name: str, kwargs: dict) -> torch.nn.Module:
    from segbalance.monai_losses import get

    return get(name, **kwargs)


def train(config: TrainConfig | dict) -> Path:
    """Train and return the path of the last checkpoint (``<out>/last.pt``); see :class:`TrainConfig`.

    Raises:
        ValueError: bad options or an unknown loss name (listing the known ones).
        FileNotFoundError: ``data`` or the checkpoint to resume does not exist.
        NonFiniteLossError: the loss became NaN/inf (message: loss, epoch, step).
    """
    from monai.data import DataLoader, list_data_collate
    from tqdm.auto import tqdm

    from segbalance.monai_losses.boundary import set_schedulers_epoch
    from segbalance.training.data import build_train_dataset, is_ct, load_cases, synthetic_root

    cfg = config if isinstance(config, TrainConfig) else TrainConfig(**config)
    loss_fn = _loss_fn(cfg.loss, cfg.loss_kwargs)  # fail early on a bad name/kwargs
    rank, world, device = _init_distributed(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "last.pt"
    if cfg.resume and not last.exists():
        raise FileNotFoundError(f"{last}: no checkpoint to resume from (train once without --resume)")

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)  # noqa: NPY002 (MONAI transforms seed from the global state)
    random.seed(cfg.seed)
    if cfg.data is None:
        root = (
            synthetic_root(out, cfg.synthetic, cfg.seed, cfg.synthetic_shape)
            if rank == 0
            else out / "synthetic"
        )
        if world > 1:
            torch.distributed.barrier()
    else:
        root = Path(cfg.data)
    cases = load_cases(root)
    ct = is_ct([c["image"] for c in cases])
    num_classes = cfg.num_classes or int(max(int(c["label"].max()) for c in cases)) + 1
    dataset = build_train_dataset(cases, cfg.dim, cfg.size, ct, cfg.samples_per_volume, seed=cfg.seed + rank)

    sampler = None
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
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

    model = build_model(cfg.dim, num_classes, cfg.channels).to(device)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    amp = (device.type == "cuda") if cfg.amp is None else bool(cfg.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    info = {
        "loss": cfg.loss,
        "loss_kwargs": cfg.loss_kwargs,
        "dim": cfg.dim,
        "size": list(cfg.size),
        "channels": list(cfg.channels),
        "num_classes": num_classes,
        "ct": ct,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    }
    start = 0
    history: list[dict] = []
    if cfg.resume:
        ckpt = torch.load(last, map_location=device, weights_only=False)
        if ckpt["info"]["loss"] != cfg.loss:
            raise ValueError(
                f"{last}: checkpoint was trained with loss {ckpt['info']['loss']!r}, not {cfg.loss!r}"
            )
        (model.module if world > 1 else model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        generator.set_state(ckpt["loader_rng"])
        start = ckpt["epoch"] + 1
        history = ckpt.get("history", [])
    loss_fn = loss_fn.to(device)

    for epoch in range(start, cfg.epochs):
        model.train()
        # per-epoch loss schedules (the boundary weight α of gdl_boundary / dice_boundary), resume-safe
        alphas = set_schedulers_epoch(loss_fn, epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        total, n = 0.0, 0
        steps = len(loader) if cfg.steps_per_epoch is None else min(len(loader), cfg.steps_per_epoch)
        bar = tqdm(
            total=steps,
            desc=f"{cfg.loss} epoch {epoch + 1}/{cfg.epochs}",
            disable=not cfg.progress or rank != 0,
            leave=False,
        )
        for step, batch in enumerate(loader):
            if step >= steps:
                break
            image, label = batch["image"].to(device), batch["label"].to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=amp):
                logits = model(image)
            loss = loss_fn(logits.float(), label)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss {cfg.loss!r} {cfg.loss_kwargs or ''} became {float(loss.detach())} at epoch "
                    f"{epoch + 1} step {step + 1}; lower --lr or check the data/labels"
                )
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach())
            n += 1
            bar.update(1)
            bar.set_postfix(loss=f"{total / n:.4f}")
        bar.close()
        history.append(
            {"epoch": epoch + 1, "loss": total / max(n, 1), **({"alpha": alphas[0]} if alphas else {})}
        )
        if rank == 0:
            state = {
                "model": (model.module if world > 1 else model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "rng": _rng_state(),
                "loader_rng": generator.get_state(),
                "info": info,
                "history": history,
            }
            tmp = last.with_suffix(".tmp")
            torch.save(state, tmp)
            os.replace(tmp, last)
    if rank == 0:
        (out / "history.json").write_text(json.dumps(history, indent=1))
    if world > 1:  # per-rank record: replicas must end with identical weights
        checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
        (out / f"history_rank{rank}.json").write_text(json.dumps({"history": history, "checksum": checksum}))
    return last
