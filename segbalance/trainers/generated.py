"""Every segbalance nnU-Net trainer class, generated from :mod:`segbalance.trainers.table`.

One ``nnUNetTrainer<Name>`` per row (a :class:`~segbalance.trainers.base.SegBalanceTrainer` whose
``loss_name``/``loss_kwargs`` are the row's), and for each of them and for ``nnUNetTrainerSegBalance`` the
short variants ``…_5epochs`` (5 epochs of nnU-Net's 250 iterations) and ``…_debug`` (2 epochs × 2 training
iterations × 1 validation iteration, a checkpoint every epoch: smoke tests; it learns nothing).

The classes are attributes of this module and their ``__module__`` is this module's name, so they pickle
and re-import normally; nnU-Net finds them through the ``nnUNet_extTrainer`` shim, which re-exports
``__all__`` of this module.
"""

from __future__ import annotations

import sys

import torch

from segbalance.trainers.base import SegBalanceTrainer
from segbalance.trainers.configurable import nnUNetTrainerSegBalance
from segbalance.trainers.table import VARIANTS, TrainerSpec, trainer_specs

__all__: list[str] = ["SegBalanceTrainer", "nnUNetTrainerSegBalance"]
_CUDA = torch.device("cuda")  # nnUNetTrainer's default device


def _trainer(spec: TrainerSpec) -> type:
    attrs = {"__module__": __name__, "__qualname__": spec.name, "__doc__": spec.doc}
    attrs.update(loss_name=spec.loss, loss_kwargs=dict(spec.kwargs))
    return type(spec.name, (SegBalanceTrainer,), attrs)


def _variant(base: type, suffix: str) -> type:
    num_epochs, iterations, val_iterations = VARIANTS[suffix]

    def __init__(self, plans, configuration, fold, dataset_json, device=_CUDA):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = num_epochs
        if iterations is not None:
            self.num_iterations_per_epoch = iterations
            self.save_every = 1
        if val_iterations is not None:
            self.num_val_iterations_per_epoch = val_iterations

    name = base.__name__ + suffix
    doc = f"{base.__name__} trained for {num_epochs} epochs" + (
        f" of {iterations} iterations (smoke tests)." if iterations else "."
    )
    __init__.__qualname__ = f"{name}.__init__"
    return type(base)(
        name, (base,), {"__module__": __name__, "__qualname__": name, "__doc__": doc, "__init__": __init__}
    )


def _generate() -> None:
    module = sys.modules[__name__]
    bases = [_trainer(spec) for spec in trainer_specs().values()]
    for cls in bases:
        setattr(module, cls.__name__, cls)
        __all__.append(cls.__name__)
    for base in [*bases, nnUNetTrainerSegBalance]:
        for suffix in VARIANTS:
            cls = _variant(base, suffix)
            setattr(module, cls.__name__, cls)
            __all__.append(cls.__name__)


_generate()
