"""Save and load ``segbalance train`` checkpoints without running code from the file.

A checkpoint is a plain dictionary of tensors, lists, numbers and strings, written with ``torch.save`` to a
temporary file and moved into place with ``os.replace`` (a crash never leaves a half-written checkpoint),
and read back with ``torch.load(weights_only=True)``: a file someone sent cannot execute code on loading.
Anything that is not such a dictionary with the keys segbalance writes is refused with one line that
names the file and says what is wrong.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from segbalance.atomic import atomic_write
from segbalance.errors import UserError

__all__ = ["CheckpointError", "CHECKPOINT_KEYS", "save_checkpoint", "load_checkpoint"]

#: keys every checkpoint written by :func:`segbalance.training.train` holds
CHECKPOINT_KEYS = ("model", "info")


class CheckpointError(UserError):
    """A file that is not a loadable segbalance checkpoint; the message names the file and the problem."""


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (:func:`segbalance.atomic.atomic_write`: a temporary file in
    the same folder, then ``os.replace``; a killed run leaves the previous checkpoint intact).

    ``state`` must hold only what ``torch.load(weights_only=True)`` reads back: tensors, dicts, lists,
    tuples, strings, numbers, booleans and ``None``. Returns ``path``.
    """
    path = Path(path)
    with atomic_write(path) as tmp:
        torch.save(state, tmp)
    return path


# what torch.load raises on a crafted, truncated or foreign file (OSError: the zip reader's "Invalid
# argument" on some truncated files; KeyError: the legacy reader on an unknown magic number)
_LOAD_ERRORS = (pickle.UnpicklingError, EOFError, OSError, RuntimeError, zipfile.BadZipFile, ValueError,
                KeyError)


def _refusal(path: Path, exc: Exception) -> str:
    text = "unrecognised file format" if isinstance(exc, KeyError) else " ".join(str(exc).split())
    if isinstance(exc, pickle.UnpicklingError) and ("Unsupported global" in text or "GLOBAL" in text):
        marker = "Unsupported global: GLOBAL "
        name = text.split(marker, 1)[1].split()[0] if marker in text else "a Python object"
        return (
            f"{path}: refused to load: unpickling it would run code (it references {name}; a segbalance "
            f"checkpoint holds only tensors and plain values): not written by segbalance train, or altered"
        )
    truncated = "PytorchStreamReader failed" in text or "unexpected EOF" in text
    if isinstance(exc, (EOFError, OSError)) or truncated:
        return f"{path}: truncated or corrupt checkpoint (incomplete file; was the copy interrupted?)"
    if isinstance(exc, (pickle.UnpicklingError, zipfile.BadZipFile, KeyError)) or "invalid load key" in text:
        detail = text.split("WeightsUnpickler error:", 1)[-1].split("Check the documentation", 1)[0].strip()
        return f"{path}: not a PyTorch checkpoint ({detail[:120]})"
    return f"{path}: cannot load checkpoint: {type(exc).__name__}: {text[:200]}"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The dictionary saved by :func:`save_checkpoint`, loaded with ``weights_only=True``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError (a ``ValueError``): the file would run code when unpickled, is truncated, is not a
            PyTorch file, or is a checkpoint of something else (no ``'model'``/``'info'`` dictionaries).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (PermissionError, IsADirectoryError):
        raise
    except _LOAD_ERRORS as exc:
        raise CheckpointError(_refusal(path, exc)) from None
    is_dict = isinstance(state, dict)
    missing = [k for k in CHECKPOINT_KEYS if not is_dict or not isinstance(state.get(k), dict)]
    if missing:
        found = sorted(map(str, state))[:8] if is_dict else type(state).__name__
        raise CheckpointError(
            f"{path}: not a segbalance checkpoint (no {'/'.join(repr(k) for k in missing)} dictionary; "
            f"found {found})"
        )
    return state
