"""nnU-Net v2 trainers, one per segbalance loss (``nnUNetv2_train … -tr nnUNetTrainerDFL``).

nnU-Net finds trainers outside its package through ``nnUNet_extTrainer``: run
``eval "$(segbalance nnunet-env)"`` in the shell, or call :func:`register` from Python. The trainer
classes are generated from one table (:mod:`segbalance.trainers.table`, plus the losses that declare a
trainer with ``register(…, trainer=…)``) in :mod:`segbalance.trainers.generated`. They are imported
lazily (``segbalance.trainers.nnUNetTrainerDFL``), so importing this package, e.g. for :func:`register`
or the CLI, does not import nnunetv2.
"""

from __future__ import annotations

import importlib

from segbalance.extras import require

require("nnunetv2", needed_for="segbalance.trainers (nnU-Net v2 trainers)")

from segbalance.trainers.discovery import EXT_FOLDER, export_line, register

__all__ = ["EXT_FOLDER", "TRAINER_LOSSES", "export_line", "register", "trainer_names"]


def trainer_names() -> list[str]:
    """Every generated trainer class name (loss trainers, ``nnUNetTrainerSegBalance``, their variants)."""
    from segbalance.trainers.table import CONFIGURABLE_TRAINER, VARIANTS, trainer_specs

    bases = [*trainer_specs(), CONFIGURABLE_TRAINER]
    return bases + [b + suffix for b in bases for suffix in VARIANTS]


def __getattr__(name: str):
    if name == "TRAINER_LOSSES":
        # trainer class name → registry loss name (docs, tests, benchmarks); includes plugin trainers
        from segbalance.trainers.table import trainer_losses

        return trainer_losses()
    if name == "SegBalanceTrainer" or name.startswith("nnUNetTrainer"):
        module = importlib.import_module(f"{__name__}.generated")
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
