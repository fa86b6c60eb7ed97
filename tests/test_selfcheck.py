"""``segbalance selfcheck``: passes on this CPU; each kind of check fails when what it checks is broken."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

import segbalance.monai_losses.distance as distance
from segbalance import selfcheck
from segbalance.cli import main
from segbalance.monai_losses import registry
from segbalance.selfcheck import Report, check_distance, check_losses

CPU = torch.device("cpu")


class _LowPrecision(nn.Module):
    """Computes in the dtype autocast hands in (no float32 upcast): bf16 sums drift from float32."""

    def forward(self, logits, target):
        return logits.exp().sum() / 1e4


class _InfGradient(nn.Module):
    """sqrt at 0: finite value, infinite gradient."""

    def forward(self, logits, target):
        x = logits.float()
        return torch.sqrt(x - x.amin().detach()).sum()


@pytest.fixture
def broken_losses(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "zz_low_precision", _LowPrecision)
    monkeypatch.setitem(registry._REGISTRY, "zz_inf_grad", _InfGradient)
    return ["zz_low_precision", "zz_inf_grad"]


def _check_quick_report(result: dict) -> None:
    assert result["passed"] is True and result["failed"] == []
    env = result["environment"]
    assert env["device_type"] == "cpu" and env["amp_dtype"] == "bfloat16"
    assert env["torch"] == torch.__version__ and env["segbalance"] and env["nnunetv2"] and env["monai"]
    groups = {r["group"] for r in result["checks"]}
    assert groups == {"loss", "distance", "trainer loss", "train step"}
    losses = {r["name"]: r for r in result["checks"] if r["group"] == "loss"}
    assert set(selfcheck.QUICK_LOSSES) <= set(losses)
    for row in losses.values():
        assert row["time_ratio"] > 0
        assert abs(row["value"] - row["float32_value"]) <= 1e-3 * abs(row["float32_value"]) + 1e-4
    steps = {r["name"]: r for r in result["checks"] if r["group"] == "train step"}
    assert set(steps) == set(selfcheck.STEP_TRAINERS) and steps["nnUNetTrainer"]["time_ratio"] == 1.0
    trainer_losses = [r["name"] for r in result["checks"] if r["group"] == "trainer loss"]
    assert trainer_losses == ["nnUNetTrainerDFL", "nnUNetTrainerBoundary"]


def test_quick_selfcheck_command_passes_and_writes_json(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    path = tmp_path / "out" / "selfcheck.json"
    assert main(["selfcheck", "--device", "cpu", "--quick", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and "nnUNetTrainerBoundary" in out
    _check_quick_report(json.loads(path.read_text()))
    # the temporary nnU-Net environment is undone
    assert "nnUNet_extTrainer" not in os.environ


def test_loss_checks_catch_low_precision_and_infinite_gradients(broken_losses):
    report = Report()
    check_losses(report, CPU, ["dfl", *broken_losses], size=12, repeats=1)
    rows = {r["name"]: r for r in report.rows}
    assert rows["dfl"]["ok"] is True
    assert rows["zz_low_precision"]["ok"] is False and "vs float32" in rows["zz_low_precision"]["detail"]
    assert rows["zz_inf_grad"]["ok"] is False and "non-finite gradient" in rows["zz_inf_grad"]["detail"]
    assert [r["name"] for r in report.failed] == broken_losses


def test_distance_check_catches_a_wrong_transform(monkeypatch):
    report = Report()
    check_distance(report, CPU, size=12)
    assert [r["ok"] for r in report.rows] == [True, True]
    exact = distance.euclidean_distance_transform

    def off_by_a_bit(mask, spacing=None, *, method="auto", **kw):
        out = exact(mask, spacing, method=method, **kw)
        return out * 1.01 if method in ("brute", "windowed") else out

    monkeypatch.setattr(distance, "euclidean_distance_transform", off_by_a_bit)
    report = Report()
    check_distance(report, CPU, size=12)
    assert [r["ok"] for r in report.rows] == [False, False]
    assert "max |Δ|" in report.rows[0]["detail"]


def test_exit_code_is_one_when_a_check_fails(monkeypatch, capsys):
    failing = {"passed": False, "failed": ["loss: x"], "seconds": 0.1, "environment": {
        "segbalance": "0", "device": "cpu", "device_type": "cpu", "amp_dtype": "bfloat16", "torch": "t",
        "monai": "m", "nnunetv2": "n"},
        "checks": [{"group": "loss", "name": "x", "ok": False, "detail": "value nan"}]}
    monkeypatch.setattr(selfcheck, "run_selfcheck", lambda *a, **k: failing)
    assert main(["selfcheck", "--device", "cpu"]) == 1
    assert "1 check(s) FAILED" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_is_a_one_line_error(capsys):
    assert main(["selfcheck", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segbalance selfcheck: error: --device cuda") and "Traceback" not in err


def test_unknown_device_is_a_one_line_error(capsys):
    assert main(["selfcheck", "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segbalance selfcheck: error: --device must be cpu or cuda, got 'gpu'")
    assert "Traceback" not in err


@pytest.mark.slow
def test_full_selfcheck_passes_on_cpu():
    result = selfcheck.run_selfcheck("cpu")
    assert result["passed"], result["failed"]
    from segbalance.monai_losses import names
    from segbalance.trainers import TRAINER_LOSSES

    assert [r["name"] for r in result["checks"] if r["group"] == "loss"] == names()
    assert [r["name"] for r in result["checks"] if r["group"] == "trainer loss"] == list(TRAINER_LOSSES)


def test_train_step_check_catches_an_optimizer_that_does_not_update(monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    def frozen(self):
        optimizer = torch.optim.SGD(self.network.parameters(), lr=0.0)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)

    monkeypatch.setattr(nnUNetTrainer, "configure_optimizers", frozen)
    monkeypatch.setattr(selfcheck, "STEP_TRAINERS", ("nnUNetTrainer",))
    report = Report()
    with selfcheck._nnunet_folders([16, 32, 32], 2):
        selfcheck.check_train_steps(report, CPU, [16, 32, 32], 2, steps=1)
    assert [r["ok"] for r in report.rows] == [False]
    assert "5 optimizer steps left every parameter unchanged" in report.rows[0]["detail"]
