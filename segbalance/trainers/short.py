"""Short-training variants of every segbalance trainer, for smoke tests and debugging.

``<Trainer>_5epochs``: 5 epochs of nnU-Net's usual 250 iterations (nnU-Net's own ``_5epochs`` style).
``<Trainer>_debug``: 2 epochs × 2 training iterations × 1 validation iteration, checkpoint each epoch —
the end-to-end test's trainer; it learns nothing, it only exercises the whole pipeline.
"""

from __future__ import annotations

import sys

import torch

from segbalance.trainers import boundary, compound, configurable, distribution, marginal, region
from segbalance.trainers.base import SegBalanceTrainer

__all__: list[str] = []
_CUDA = torch.device("cuda")  # nnUNetTrainer's default device


def _variant(base: type, name: str, num_epochs: int, iterations: int | None, val_iterations: int | None):
    class Variant(base):
        def __init__(self, plans, configuration, fold, dataset_json, device=_CUDA):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = num_epochs
            if iterations is not None:
                self.num_iterations_per_epoch = iterations
                self.save_every = 1
            if val_iterations is not None:
                self.num_val_iterations_per_epoch = val_iterations

    Variant.__name__ = Variant.__qualname__ = name
    Variant.__module__ = __name__
    Variant.__doc__ = f"{base.__name__} trained for {num_epochs} epochs" + (
        f" of {iterations} iterations (smoke tests)." if iterations else "."
    )
    return Variant


VARIANTS = {"_5epochs": (5, None, None), "_debug": (2, 2, 1)}


def _trainer_classes() -> list[type]:
    classes = []
    for module in (distribution, marginal, region, boundary, compound, configurable):
        for name, obj in vars(module).items():
            if isinstance(obj, type) and issubclass(obj, SegBalanceTrainer) and obj is not SegBalanceTrainer:
                if obj.__module__ == module.__name__ and name.startswith("nnUNetTrainer"):
                    classes.append(obj)
    return classes


def _make_variants() -> None:
    module = sys.modules[__name__]
    for base in _trainer_classes():
        for suffix, (epochs, iters, val_iters) in VARIANTS.items():
            name = base.__name__ + suffix
            cls = _variant(base, name, epochs, iters, val_iters)
            setattr(module, name, cls)
            __all__.append(name)


_make_variants()
