"""The never-predicted guard: settings, the zero run, class names, and its hooks on nnU-Net's pseudo-Dice.

The hooks run on a trainer object whose nnU-Net parts are stubbed (``nnUNetTrainer.on_epoch_end`` and
friends replaced by no-ops), fed with a pseudo-Dice history as nnU-Net's logger holds it. The end-to-end
warning of a real smoke-budget DFL run is checked in ``tests/test_compare_nnunet.py``.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("nnunetv2")

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402

from segbalance.trainers import guard  # noqa: E402
from segbalance.trainers.guard import (  # noqa: E402
    NeverPredictedError,
    NeverPredictedGuard,
    class_names,
    guard_settings,
    zero_run,
)


class _Logger:
    def __init__(self):
        self.history: list[list[float]] = []

    def get_value(self, key, step):
        assert key == "dice_per_class_or_region" and step is None
        return self.history


class _Labels:
    def __init__(self, regions=None):
        self.has_regions = regions is not None
        self.foreground_regions = regions
        self.foreground_labels = [1, 2]


class _Trainer(NeverPredictedGuard):
    def __init__(self, regions=None):  # no nnU-Net set-up: only what the guard reads
        self.logger = _Logger()
        self.label_manager = _Labels(regions)
        self.dataset_json = {"labels": {"background": 0, "organ": 1, "lesion": 2}}
        self.lines: list[str] = []

    def print_to_log_file(self, *args, **kwargs):
        self.lines.append(" ".join(str(a) for a in args))


@pytest.fixture
def trainer(monkeypatch):
    for hook in ("on_train_start", "on_epoch_end", "on_train_end"):
        monkeypatch.setattr(nnUNetTrainer, hook, lambda self: None)
    for var in (guard.EPOCHS_ENV, guard.WARMUP_ENV, guard.STOP_ENV):
        monkeypatch.delenv(var, raising=False)
    return _Trainer


def _train(t: _Trainer, dice: list[list[float]]) -> list[str]:
    t.on_train_start()
    for row in dice:
        t.logger.history.append(row)
        t.on_epoch_end()
    t.on_train_end()
    return [line for line in t.lines if "WARNING" in line]


def test_zero_run_counts_trailing_zeros_after_the_warmup_and_skips_nan():
    assert zero_run([]) == 0
    assert zero_run([0.0, 0.0, 0.5, 0.0, 0.0]) == 2
    assert zero_run([0.0, math.nan, 0.0]) == 2
    assert zero_run([0.0] * 10, first_epoch=7) == 3
    assert zero_run([0.0, 0.1]) == 0


def test_settings_from_the_environment_and_bad_values_name_the_variable():
    s = guard_settings({})
    assert (s.epochs, s.warmup, s.stop) == (guard.DEFAULT_EPOCHS, guard.DEFAULT_WARMUP, False)
    s = guard_settings({guard.EPOCHS_ENV: "0", guard.WARMUP_ENV: "3", guard.STOP_ENV: "yes"})
    assert (s.epochs, s.warmup, s.stop) == (0, 3, True)
    for var, value in ((guard.EPOCHS_ENV, "ten"), (guard.WARMUP_ENV, "-1"), (guard.STOP_ENV, "maybe")):
        with pytest.raises(ValueError, match=var):
            guard_settings({var: value})


def test_class_names_follow_the_dataset_json_for_labels_and_regions():
    labels = {"labels": {"background": 0, "organ": 1, "lesion": 2}}
    assert class_names(labels, _Labels()) == ["'organ' (label 1)", "'lesion' (label 2)"]
    regions = {"labels": {"background": 0, "whole": [1, 2], "core": 2}}
    named = class_names(regions, _Labels(regions=[(1, 2), (2,)]))
    assert named == ["'whole' (region (1, 2))", "'core' (region 2)"]


def test_a_class_never_predicted_after_the_warmup_is_named_once(trainer, monkeypatch):
    monkeypatch.setenv(guard.WARMUP_ENV, "2")
    monkeypatch.setenv(guard.EPOCHS_ENV, "3")
    t = trainer()
    warnings = _train(t, [[0.5, 0.0]] * 8)
    during = [w for w in warnings if "has not been predicted" in w]
    assert len(during) == 1 and "'lesion' (label 2)" in during[0] and "epochs 2-4" in during[0]
    assert guard.DOCS in during[0] and "'organ'" not in " ".join(warnings)
    end = [w for w in warnings if "training ended" in w]
    assert len(end) == 1 and "'lesion' (label 2)" in end[0] and "last 3 epochs" in end[0]


def test_no_warning_when_the_class_switches_on(trainer, monkeypatch):
    monkeypatch.setenv(guard.WARMUP_ENV, "2")
    monkeypatch.setenv(guard.EPOCHS_ENV, "3")
    # zero during the warm-up and for fewer than K epochs after it, then predicted
    assert _train(trainer(), [[0.5, 0.0]] * 4 + [[0.6, 0.1]] * 4) == []


def test_a_warned_class_that_switches_on_is_reported_and_not_warned_at_the_end(trainer, monkeypatch):
    monkeypatch.setenv(guard.WARMUP_ENV, "0")
    monkeypatch.setenv(guard.EPOCHS_ENV, "2")
    t = trainer()
    warnings = _train(t, [[0.5, 0.0]] * 3 + [[0.5, 0.2]] * 3)
    assert len(warnings) == 1 and "training ended" not in warnings[0]
    assert any("'lesion' (label 2) is predicted (epoch 3)" in line for line in t.lines)


def test_short_training_warns_at_its_end(trainer, monkeypatch):
    # the smoke budget: 2 epochs, shorter than the warm-up; the end of training still says it
    warnings = _train(trainer(), [[0.1, 0.0], [0.2, 0.0]])
    assert len(warnings) == 1 and "training ended" in warnings[0] and "last 2 epochs" in warnings[0]


def test_off_with_zero_epochs_and_opt_in_stop(trainer, monkeypatch):
    monkeypatch.setenv(guard.EPOCHS_ENV, "0")
    assert _train(trainer(), [[0.0, 0.0]] * 30) == []
    monkeypatch.setenv(guard.EPOCHS_ENV, "2")
    monkeypatch.setenv(guard.WARMUP_ENV, "1")
    monkeypatch.setenv(guard.STOP_ENV, "1")
    with pytest.raises(NeverPredictedError, match=r"'lesion' \(label 2\).*SEGBALANCE_GUARD_STOP=1"):
        _train(trainer(), [[0.3, 0.0]] * 5)


def test_every_segbalance_trainer_and_the_comparison_controls_have_the_guard():
    from segbalance.trainers import TRAINER_LOSSES, nnUNetTrainerSegBalance
    from segbalance.trainers.diagnostics import RareClassDiagnostics
    from segbalance.trainers.nnunet_ext import segbalance_nnunet_trainers as ours

    for name in [*TRAINER_LOSSES, "nnUNetTrainerSegBalance"]:
        cls = getattr(ours, name)
        assert issubclass(cls, NeverPredictedGuard) and issubclass(cls, RareClassDiagnostics), name
    assert issubclass(nnUNetTrainerSegBalance, NeverPredictedGuard)


def test_diagnostics_wrapper_keeps_the_loss_value_and_its_saved_state(monkeypatch):
    import torch

    from segbalance.monai_losses import get
    from segbalance.trainers.base import SegBalanceLossTrainer
    from segbalance.trainers.diagnostics import DiagnosedLoss

    inner = get("recall", ema=0.9)
    wrapped = DiagnosedLoss(inner, ignore_label=None, samples=2)
    x = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    y = torch.randint(0, 3, (2, 1, 4, 4, 4))
    torch.testing.assert_close(wrapped(x, y), get("recall", ema=0.9)(x, y))
    wrapped(x, y), wrapped(x, y)
    with torch.no_grad():  # validation calls are not sampled
        wrapped(x.detach(), y)
    summary = wrapped.epoch_summary()
    assert summary["samples"] == 2 and wrapped.rows == []
    t = object.__new__(SegBalanceLossTrainer)
    t.loss = wrapped
    assert inner.state_dict() and t.training_loss() is inner
    assert set(t.loss_state()) == set(inner.state_dict())  # no "loss." prefix from the wrapper
