"""``nnUNetTrainerSegBalance``: any registered loss, chosen by a small JSON configuration."""

from __future__ import annotations

import json
import os
from pathlib import Path

from segbalance.trainers.base import SegBalanceTrainer

__all__ = ["nnUNetTrainerSegBalance", "read_loss_config", "LOSS_ENV", "CONFIG_FILE"]

LOSS_ENV = "SEGBALANCE_LOSS"
CONFIG_FILE = "segbalance_loss.json"


def read_loss_config(value: str) -> dict:
    """Parse ``{"name": …, "kwargs": {…}}`` from a JSON string or the path of a JSON file.

    Raises:
        ValueError: naming ``SEGBALANCE_LOSS`` when the JSON is malformed or lacks ``name``.
        FileNotFoundError: when ``value`` is neither JSON nor an existing file.
    """
    text = value.strip()
    if not text.startswith("{"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{LOSS_ENV}={value!r} is neither a JSON object nor an existing file")
        text = path.read_text()
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{LOSS_ENV} is not valid JSON ({exc}): {value!r}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        raise ValueError(f'{LOSS_ENV} must be like {{"name": "dfl", "kwargs": {{}}}}, got {value!r}')
    unknown = set(config) - {"name", "kwargs"}
    if unknown:
        raise ValueError(f"{LOSS_ENV} has unknown keys {sorted(unknown)}; allowed: name, kwargs")
    kwargs = config.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"{LOSS_ENV} 'kwargs' must be an object, got {kwargs!r}")
    return {"name": config["name"], "kwargs": kwargs}


class nnUNetTrainerSegBalance(SegBalanceTrainer):
    """Trains with the loss named in ``SEGBALANCE_LOSS`` (JSON, or the path of a JSON file).

    ``SEGBALANCE_LOSS='{"name": "focal_tversky", "kwargs": {"gamma": 0.75}}' nnUNetv2_train … -tr
    nnUNetTrainerSegBalance``. The configuration is written to ``segbalance_loss.json`` in the fold's
    output folder; a resumed run (``--c``) without the variable reads it back from there.
    """

    def _build_loss(self):
        value = os.environ.get(LOSS_ENV)
        saved = Path(self.output_folder) / CONFIG_FILE if self.output_folder else None
        if value:
            config = read_loss_config(value)
        elif saved is not None and saved.is_file():
            config = read_loss_config(str(saved))
        else:
            raise ValueError(
                f"{type(self).__name__} needs the loss in the environment variable {LOSS_ENV}, e.g. "
                f'{LOSS_ENV}=\'{{"name": "dfl", "kwargs": {{}}}}\' (or the path of such a JSON file)'
            )
        loss = self.segbalance_loss(config["name"], **config["kwargs"])
        if saved is not None and self.local_rank == 0:
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(config, indent=2) + "\n")
        return loss
