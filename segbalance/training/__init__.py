"""MONAI training pipeline: ``train(config)``, ``predict_volume``, the ``segbalance train`` command."""

from segbalance.training.engine import NonFiniteLossError, TrainConfig, build_model, load_model, train
from segbalance.training.predict import predict_volume

__all__ = ["NonFiniteLossError", "TrainConfig", "build_model", "load_model", "predict_volume", "train"]
