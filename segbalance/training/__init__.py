"""MONAI training pipeline: ``train(config)``, ``predict_volume``, the ``segbalance train`` command."""

from segbalance.extras import require

require("monai", "tqdm", needed_for="segbalance.training (MONAI training)")

from segbalance.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from segbalance.training.engine import NonFiniteLossError, TrainConfig, build_model, load_model, train
from segbalance.training.predict import predict_volume

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "TrainConfig",
    "build_model",
    "load_checkpoint",
    "load_model",
    "predict_volume",
    "save_checkpoint",
    "train",
]
