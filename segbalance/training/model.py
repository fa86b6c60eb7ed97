"""The network of ``segbalance train`` and loading it back from a checkpoint.

Its own module so that training (:mod:`~segbalance.training.engine`) and prediction
(:mod:`~segbalance.training.predict`) both use it without importing each other.
"""

from __future__ import annotations

import os

import torch

from segbalance.training.checkpoint import CheckpointError, load_checkpoint

__all__ = ["build_model", "load_model"]


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
    """The model of a checkpoint written by :func:`train`, in eval mode, and the checkpoint's ``info``.

    The file is read with :func:`~segbalance.training.checkpoint.load_checkpoint` (``weights_only=True``;
    a file that would run code, a truncated file or another program's checkpoint is refused with a
    ``ValueError`` naming the file).
    """
    ckpt = load_checkpoint(checkpoint, map_location=device)
    info = ckpt["info"]
    missing = [k for k in ("dim", "num_classes", "channels") if k not in info]
    if missing:
        raise CheckpointError(f"{checkpoint}: not a segbalance checkpoint (its info has no {missing})")
    model = build_model(info["dim"], info["num_classes"], tuple(info["channels"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"{checkpoint}: the weights do not fit the UNet its info describes ({first})"
        ) from None
    return model.to(device).eval(), info
