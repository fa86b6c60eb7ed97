"""The never-predicted guard: one clear line when a foreground class or region is never predicted.

nnU-Net ends a training whose model never predicts a class as a success: its pseudo-Dice for the class is
0 in every epoch and nothing says so. :class:`NeverPredictedGuard` reads that pseudo-Dice (nnU-Net's
``dice_per_class_or_region``, computed on the validation batches of every epoch) and, after a warm-up of
``W`` epochs, writes one warning line to nnU-Net's training log and stdout when a class's pseudo-Dice has
been exactly 0 for ``K`` consecutive epochs; at the end of training it says so again for every class still
at 0. Classes are named by their dataset.json label names.

Configured as nnU-Net options are, by environment variables:

* ``SEGBALANCE_GUARD_EPOCHS`` (``K``, default :data:`DEFAULT_EPOCHS`): consecutive epochs at 0; ``0`` turns
  the guard off;
* ``SEGBALANCE_GUARD_WARMUP`` (``W``, default :data:`DEFAULT_WARMUP`): epochs before the guard looks;
* ``SEGBALANCE_GUARD_STOP=1``: stop the training with :class:`NeverPredictedError` instead of warning
  (``checkpoint_latest.pth`` of that epoch is kept, so ``--c`` continues it).

Defaults from the measured runs (docs/rare-class.md): on the comparison's phantoms every class that was
learned at all had a pseudo-Dice above 0 by epoch 14 of 25 iterations (350 iterations; nnU-Net's epochs
have 250), so ``W = 20`` and ``K = 10`` warn at epoch 30 at the earliest and never fired on a run that
learned the class. Every segbalance trainer has the guard; with nnU-Net's own trainers use it as a mixin:
``class MyTrainer(NeverPredictedGuard, nnUNetTrainer): pass``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

__all__ = [
    "NeverPredictedGuard",
    "NeverPredictedError",
    "GuardSettings",
    "guard_settings",
    "zero_run",
    "class_names",
    "EPOCHS_ENV",
    "WARMUP_ENV",
    "STOP_ENV",
    "DEFAULT_EPOCHS",
    "DEFAULT_WARMUP",
    "DOCS",
]

EPOCHS_ENV = "SEGBALANCE_GUARD_EPOCHS"
WARMUP_ENV = "SEGBALANCE_GUARD_WARMUP"
STOP_ENV = "SEGBALANCE_GUARD_STOP"
DEFAULT_EPOCHS = 10
DEFAULT_WARMUP = 20
#: where the user is sent: what to try when a class is never predicted
DOCS = "docs/nnunet.md#a-class-is-never-predicted"


class NeverPredictedError(RuntimeError):
    """Raised by the guard with ``SEGBALANCE_GUARD_STOP=1``."""


class GuardSettings:
    """``epochs`` (K, 0 = off), ``warmup`` (W) and ``stop`` as read from the environment."""

    def __init__(self, epochs: int, warmup: int, stop: bool) -> None:
        self.epochs, self.warmup, self.stop = epochs, warmup, stop

    def __repr__(self) -> str:
        return f"GuardSettings(epochs={self.epochs}, warmup={self.warmup}, stop={self.stop})"


def _int_env(name: str, default: int, environ) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{name} must be a whole number of epochs >= 0, got {raw!r}")
    return value


def guard_settings(environ=None) -> GuardSettings:
    """The guard's settings from ``environ`` (default ``os.environ``); ``ValueError`` naming the variable
    for a value that is not a number of epochs, or a ``SEGBALANCE_GUARD_STOP`` that is not a yes/no."""
    environ = os.environ if environ is None else environ
    stop = environ.get(STOP_ENV, "").strip().lower()
    if stop not in ("", "0", "false", "no", "off", "1", "true", "yes", "on"):
        raise ValueError(f"{STOP_ENV} must be 1/true/yes/on or 0/false/no/off, got {stop!r}")
    return GuardSettings(
        _int_env(EPOCHS_ENV, DEFAULT_EPOCHS, environ),
        _int_env(WARMUP_ENV, DEFAULT_WARMUP, environ),
        stop in ("1", "true", "yes", "on"),
    )


def zero_run(history: Sequence[float], first_epoch: int = 0) -> int:
    """How many of the last epochs of ``history`` (pseudo-Dice of one class, epoch 0 first), counting only
    epochs ``>= first_epoch``, had a pseudo-Dice of exactly 0. NaN (the class was in no validation batch and
    was not predicted) neither counts nor breaks the run.

    Example:
        >>> zero_run([0.0, 0.3, 0.0, float("nan"), 0.0])
        2
        >>> zero_run([0.0, 0.0, 0.0], first_epoch=2)
        1
    """
    run = 0
    for epoch in range(len(history) - 1, first_epoch - 1, -1):
        value = history[epoch]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if value != 0:
            break
        run += 1
    return run


def class_names(dataset_json: dict, label_manager) -> list[str]:
    """The dataset.json name of every entry of nnU-Net's pseudo-Dice list, ``'name' (label v)`` or
    ``'name' (region (1, 2))``, in its order (``foreground_regions`` or ``foreground_labels``)."""
    by_value: dict = {}
    for name, value in (dataset_json.get("labels") or {}).items():
        key = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        by_value.setdefault(tuple(int(v) for v in key), name)
    out = []
    if label_manager.has_regions:
        for region in label_manager.foreground_regions:
            key = tuple(int(v) for v in (region if isinstance(region, (list, tuple)) else (region,)))
            out.append(f"{by_value.get(key, '?')!r} (region {key if len(key) > 1 else key[0]})")
    else:
        for label in label_manager.foreground_labels:
            out.append(f"{by_value.get((int(label),), '?')!r} (label {int(label)})")
    return out


class NeverPredictedGuard(nnUNetTrainer):
    """Mixin for any ``nnUNetTrainer``: warns (or stops) when a class is never predicted (module doc)."""

    def on_train_start(self):
        super().on_train_start()
        self._guard = guard_settings()
        self._guard_warned: set[int] = set()
        if self._guard.epochs:
            self.print_to_log_file(
                f"segbalance guard: warns when a class's pseudo-Dice is 0 for {self._guard.epochs} "
                f"epochs in a row after epoch {self._guard.warmup}{' and stop' if self._guard.stop else ''} "
                f"({EPOCHS_ENV}, {WARMUP_ENV}, {STOP_ENV})"
            )

    def _guard_history(self) -> list[list[float]]:
        return list(self.logger.get_value("dice_per_class_or_region", None))

    def on_epoch_end(self):
        super().on_epoch_end()  # logs, checkpoints, then current_epoch += 1
        settings = getattr(self, "_guard", None)
        if settings is None or not settings.epochs:
            return
        history = self._guard_history()
        epoch = len(history) - 1
        names = class_names(self.dataset_json, self.label_manager)
        for i, name in enumerate(names):
            values = [float(h[i]) for h in history]
            run = zero_run(values, settings.warmup)
            if run < settings.epochs:
                if values and values[-1] > 0 and i in self._guard_warned:
                    self._guard_warned.discard(i)
                    self.print_to_log_file(f"segbalance guard: class {name} is predicted (epoch {epoch})")
                continue
            if i in self._guard_warned:
                continue
            self._guard_warned.add(i)
            message = (
                f"segbalance guard: WARNING class {name} has not been predicted for {run} epochs "
                f"(pseudo-Dice 0 in epochs {epoch - run + 1}-{epoch}, warm-up {settings.warmup}); "
                f"the model may never learn it with this loss. What to try: {DOCS}"
            )
            self.print_to_log_file(message)
            if settings.stop:
                raise NeverPredictedError(f"{message} (stopped: {STOP_ENV}=1; --c continues from here)")

    def on_train_end(self):
        super().on_train_end()
        settings = getattr(self, "_guard", None)
        if settings is None or not settings.epochs:
            return
        history = self._guard_history()
        last = min(settings.epochs, len(history))
        for i, name in enumerate(class_names(self.dataset_json, self.label_manager)):
            values = [float(h[i]) for h in history]
            if last and zero_run(values, len(history) - last) == last:
                self.print_to_log_file(
                    f"segbalance guard: WARNING training ended with class {name} never predicted in its last "
                    f"{last} epochs (pseudo-Dice 0); the final model does not segment it. What to try: {DOCS}"
                )
