"""Making the segbalance trainers visible to nnU-Net (``nnUNet_extTrainer``), without importing nnunetv2."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

__all__ = ["EXT_FOLDER", "ENV_VAR", "register", "export_line"]

ENV_VAR = "nnUNet_extTrainer"
# holds one uniquely named module re-exporting every trainer; nnU-Net imports it by that bare name and
# finds classes whose __module__ stays the defining segbalance module (so they pickle and reload normally)
EXT_FOLDER = str(Path(__file__).resolve().parent / "nnunet_ext")


def _with_folder(current: str | None) -> str:
    paths = [p for p in (current or "").split(os.pathsep) if p.strip()]
    if any(os.path.abspath(p) == EXT_FOLDER for p in paths):
        return os.pathsep.join(paths)
    return os.pathsep.join([*paths, EXT_FOLDER])


def register(environ: dict | None = None) -> str:
    """Add the segbalance trainer folder to ``nnUNet_extTrainer`` (appending to an existing value).

    Changes ``os.environ`` (or ``environ``) so that nnU-Net code in this process and in subprocesses it
    starts finds ``nnUNetTrainerDFL`` & co. Returns the new value. Idempotent.
    """
    env = os.environ if environ is None else environ
    env[ENV_VAR] = _with_folder(env.get(ENV_VAR))
    return env[ENV_VAR]


def export_line(current: str | None = None) -> str:
    """The shell line ``export nnUNet_extTrainer=…`` (keeping ``current``/the present value)."""
    value = _with_folder(os.environ.get(ENV_VAR) if current is None else current)
    return f"export {ENV_VAR}={shlex.quote(value)}"
