"""MONAI training pipeline: ``train(config)``, ``predict_volume``, the ``segbalance train`` command.

The modules (torch, MONAI) are imported on first use of a name, so ``segbalance --help`` and the other
sub-commands do not pay for them.
"""

from segbalance.extras import require

require("monai", "tqdm", needed_for="segbalance.training (MONAI training)")

_LAZY = {
    "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "NonFiniteLossError": "engine", "TrainConfig": "engine", "build_model": "model", "load_model": "model",
    "train": "engine", "predict_volume": "predict", "predict_folder": "predict",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"segbalance.training.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'segbalance.training' has no attribute {name!r}")
