"""nnU-Net v2 trainers, one per segbalance loss (``nnUNetv2_train … -tr nnUNetTrainerDFL``).

nnU-Net finds trainers outside its package through ``nnUNet_extTrainer``: run
``eval "$(segbalance nnunet-env)"`` in the shell, or call :func:`register` from Python. The trainer
classes are imported lazily (``segbalance.trainers.nnUNetTrainerDFL``), so importing this package, e.g.
for :func:`register` or the CLI, does not import nnunetv2.
"""

from __future__ import annotations

import importlib

from segbalance.trainers.discovery import EXT_FOLDER, export_line, register

# loss registry name of each trainer (docs, tests, benchmarks)
TRAINER_LOSSES = {
    "nnUNetTrainerDFL": "dfl",
    "nnUNetTrainerDCE": "dce",
    "nnUNetTrainerFocal": "focal",
    "nnUNetTrainerRecall": "recall",
    "nnUNetTrainerCEL1": "ce_l1",
    "nnUNetTrainerCEKL": "ce_kl",
    "nnUNetTrainerDiceBiasCE": "ce_dicebias",
    "nnUNetTrainerGDL": "gdl",
    "nnUNetTrainerTversky": "tversky",
    "nnUNetTrainerFocalTversky": "focal_tversky",
    "nnUNetTrainerCombo": "combo",
    "nnUNetTrainerExpLog": "explog",
    "nnUNetTrainerBoundary": "gdl_boundary",
    "nnUNetTrainerHDDT": "hd_dt",
    "nnUNetTrainerDFLDice": "compound",
}

# defining module of each trainer class
_MODULES = {
    "SegBalanceTrainer": "base",
    "nnUNetTrainerDFL": "distribution",
    "nnUNetTrainerDCE": "distribution",
    "nnUNetTrainerFocal": "distribution",
    "nnUNetTrainerRecall": "distribution",
    "nnUNetTrainerCEL1": "marginal",
    "nnUNetTrainerCEKL": "marginal",
    "nnUNetTrainerDiceBiasCE": "marginal",
    "nnUNetTrainerGDL": "region",
    "nnUNetTrainerTversky": "region",
    "nnUNetTrainerFocalTversky": "region",
    "nnUNetTrainerCombo": "region",
    "nnUNetTrainerExpLog": "region",
    "nnUNetTrainerBoundary": "boundary",
    "nnUNetTrainerHDDT": "boundary",
    "nnUNetTrainerDFLDice": "compound",
    "nnUNetTrainerSegBalance": "configurable",
}

__all__ = ["EXT_FOLDER", "TRAINER_LOSSES", "export_line", "register", *_MODULES]


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
