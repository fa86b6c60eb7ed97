"""--resume is exact (2D and 3D, stateful losses, a SIGKILLed CLI run), options that may change do change,
fixed ones are refused, and divergence stops with NonFiniteLossError naming epoch and step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from segbalance.cli import main
from segbalance.synthetic import write_phantom_dataset
from segbalance.training import NonFiniteLossError, TrainConfig, engine, train
from segbalance.training.checkpoint import load_checkpoint

SHAPE = (12, 32, 32)
TINY = dict(channels=(4, 8, 16), batch_size=4, steps_per_epoch=2, progress=False)
SIZES = {2: (32, 32), 3: (8, 16, 16)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    write_phantom_dataset(root, 3, seed=0, shape=SHAPE)
    return root


def _config(data, dim: int, **options) -> dict:
    return {"data": str(data), "dim": dim, "size": SIZES[dim], "samples_per_volume": 2, **TINY, **options}


def assert_same_run(a_path, b_path) -> None:
    """Same history and bit-identical weights, optimizer moments and loss state."""
    a, b = load_checkpoint(a_path), load_checkpoint(b_path)
    assert a["history"] == b["history"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert a["loss"].keys() == b["loss"].keys()
    for k, value in a["loss"].items():
        assert torch.equal(value, b["loss"][k]) if torch.is_tensor(value) else value == b["loss"][k]


@pytest.mark.parametrize(
    "dim,loss,kwargs",
    [
        (2, "ce", {}),
        (2, "recall", {"ema": 0.9}),
        (2, "gdl_boundary", {}),
        (3, "dfl", {}),
        (3, "recall", {"ema": 0.9}),
        (3, "gdl_boundary", {}),
    ],
)
def test_resume_equals_an_uninterrupted_run(tmp_path, data, dim, loss, kwargs):
    cfg = _config(data, dim, loss=loss, loss_kwargs=kwargs)
    train(TrainConfig(out=str(tmp_path / "full"), epochs=3, **cfg))
    train(TrainConfig(out=str(tmp_path / "split"), epochs=1, **cfg))
    train(TrainConfig(out=str(tmp_path / "split"), epochs=3, resume=True, **cfg))
    assert_same_run(tmp_path / "full" / "last.pt", tmp_path / "split" / "last.pt")
    history = load_checkpoint(tmp_path / "full" / "last.pt")["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    if loss == "recall":  # the EMA counts travel in the checkpoint
        assert load_checkpoint(tmp_path / "split" / "last.pt")["loss"]["tp_ema"].numel() == 3


def test_workers_do_not_change_the_samples(tmp_path, data):
    """num_workers may change on --resume because every crop is seeded by (seed, epoch, item)."""
    cfg = _config(data, 3)
    train(TrainConfig(out=str(tmp_path / "full"), epochs=2, **cfg))
    train(TrainConfig(out=str(tmp_path / "split"), epochs=1, **cfg))
    train(TrainConfig(out=str(tmp_path / "split"), epochs=2, resume=True, **{**cfg, "num_workers": 1}))
    assert_same_run(tmp_path / "full" / "last.pt", tmp_path / "split" / "last.pt")


def test_different_seeds_give_different_runs(tmp_path, data):
    train(TrainConfig(out=str(tmp_path / "a"), epochs=1, **_config(data, 3, seed=0)))
    train(TrainConfig(out=str(tmp_path / "b"), epochs=1, **_config(data, 3, seed=1)))
    a, b = (load_checkpoint(tmp_path / r / "last.pt")["history"] for r in "ab")
    assert a != b


def test_resume_with_new_lr_uses_it(tmp_path, data):
    cfg = _config(data, 2, out=str(tmp_path / "run"))
    train(TrainConfig(epochs=1, **cfg))
    seen = {}
    original = torch.optim.Adam

    class SpyAdam(original):
        def step(self, *args, **kwargs):
            seen["lr"] = [g["lr"] for g in self.param_groups]
            return super().step(*args, **kwargs)

    torch.optim.Adam = SpyAdam
    try:
        train(TrainConfig(epochs=2, resume=True, **{**cfg, "lr": 1e-4}))
    finally:
        torch.optim.Adam = original
    assert seen["lr"] == [1e-4]
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == [1e-4]
    assert ckpt["info"]["config"]["lr"] == 1e-4


def test_resume_refuses_a_changed_fixed_option(tmp_path, data):
    cfg = _config(data, 2, out=str(tmp_path / "run"))
    train(TrainConfig(epochs=1, **cfg))
    last = tmp_path / "run" / "last.pt"
    with pytest.raises(ValueError) as err:
        train(TrainConfig(epochs=2, resume=True, **{**cfg, "loss": "dice", "seed": 3}))
    assert str(err.value).startswith(
        f"{last}: cannot resume with changed options: --loss 'ce' -> 'dice'; --seed 0 -> 3 (checkpoint value"
    )
    with pytest.raises(ValueError, match=r"--size \[32, 32\] -> \[16, 16\]"):
        train(TrainConfig(epochs=2, resume=True, **{**cfg, "size": (16, 16)}))
    with pytest.raises(ValueError, match=r"--num-classes 3 -> 4"):
        train(TrainConfig(epochs=2, resume=True, **{**cfg, "num_classes": 4}))
    assert load_checkpoint(last)["epoch"] == 0  # nothing was trained


def test_resume_refusal_names_the_real_flags():
    """The refusal lists the options that may change by their command-line flags (--no-predict, not the
    field name predict_test)."""
    cfg = TrainConfig(loss="dice", progress=False)
    saved = {**cfg.record(), "loss": "ce"}
    with pytest.raises(ValueError) as err:
        engine.check_resume_options("last.pt", saved, cfg)
    message = str(err.value)
    assert message.startswith("last.pt: cannot resume with changed options: --loss 'ce' -> 'dice' (")
    assert message.endswith("--no-amp, --num-workers, --no-progress, --compile-loss, --no-predict may change "
                            "on --resume")
    assert "--predict-test" not in message and "--amp" not in message.replace("--no-amp", "")


def test_cli_resume_takes_options_from_the_checkpoint(tmp_path, data, capsys):
    out = tmp_path / "run"
    common = ["--out", str(out), "--epochs", "2", "--no-progress"]
    first = ["train", "--data", str(data), "--loss", "dfl", "--dim", "3", "--size", "8,16,16", "--channels",
             "4,8,16", "--batch-size", "4", "--samples-per-volume", "2", "--steps-per-epoch", "2",
             "--seed", "5"]
    assert main([*first, "--out", str(tmp_path / "full"), "--epochs", "2", "--no-progress"]) == 0
    assert main([*first, "--out", str(out), "--epochs", "1", "--no-progress"]) == 0
    assert main(["train", "--resume", *common]) == 0  # loss, dim, size, seed... from the checkpoint
    assert_same_run(tmp_path / "full" / "last.pt", out / "last.pt")
    capsys.readouterr()
    assert main(["train", "--resume", *common, "--loss", "ce"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"segbalance train: error: {out / 'last.pt'}: cannot resume with changed options: "
                          f"--loss 'dfl' -> 'ce'")
    assert "\n" not in err


def test_divergence_is_a_non_finite_loss_error_with_epoch_and_step(tmp_path, data):
    """lr=1e6 blows up the logits: the loop reports it (not the loss's own ValueError on NaN logits)."""
    cfg = _config(data, 2, out=str(tmp_path / "run"), loss="dfl", lr=1e6)
    message = r"^loss 'dfl': the model's logits became NaN/Inf at epoch \d+ step \d+"
    with pytest.raises(NonFiniteLossError, match=message):
        train(TrainConfig(epochs=6, **cfg))


def test_nan_then_resume_with_lower_lr(tmp_path, data, monkeypatch):
    """A NaN at epoch 2 step 2 stops the run; the epoch-1 checkpoint is kept and --resume --lr continues."""
    calls = {"n": 0}
    original = engine.build_model

    class NaNOnCall(torch.nn.Module):
        def __init__(self, inner, at):
            super().__init__()
            self.inner, self.at = inner, at

        def forward(self, x):
            calls["n"] += 1
            y = self.inner(x)
            return y * float("nan") if calls["n"] == self.at else y

        def state_dict(self, *args, **kwargs):
            return self.inner.state_dict(*args, **kwargs)

        def load_state_dict(self, *args, **kwargs):
            return self.inner.load_state_dict(*args, **kwargs)

    monkeypatch.setattr(engine, "build_model", lambda *a, **k: NaNOnCall(original(*a, **k), at=4))
    cfg = _config(data, 2, out=str(tmp_path / "run"), loss="dfl", loss_kwargs={"beta": 1})
    with pytest.raises(NonFiniteLossError) as err:
        train(TrainConfig(epochs=3, **cfg))
    assert str(err.value).startswith(
        "loss 'dfl' {\"beta\": 1}: the model's logits became NaN/Inf at epoch 2 step 2; lower the learning"
    )
    assert not isinstance(err.value, ValueError)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 0
    monkeypatch.setattr(engine, "build_model", original)
    train(TrainConfig(epochs=3, resume=True, **{**cfg, "lr": 1e-4}))
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["epoch"] == 2 and [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == [1e-4]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path, data):
    """kill -9 of `segbalance train --dim 3` after its first checkpoint; --resume ends where a run that was
    never interrupted ends (weights, optimizer, history)."""
    args = ["train", "--data", str(data), "--dim", "3", "--size", "8,16,16", "--channels", "4,8,16",
            "--batch-size", "4", "--samples-per-volume", "2", "--steps-per-epoch", "2", "--epochs", "4",
            "--loss", "recall", "--loss-kwargs", '{"ema": 0.9}', "--no-progress"]
    killed = tmp_path / "killed"
    # same thread count as this process: float sums (and so the bits) depend on it
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-m", "segbalance.cli", *args, "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not (killed / "last.pt").exists() and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    done = load_checkpoint(killed / "last.pt")["epoch"] + 1  # a complete checkpoint, never a partial one
    assert done < 4
    assert main([*args, "--out", str(killed), "--resume"]) == 0
    full = tmp_path / "full"
    assert main([*args, "--out", str(full)]) == 0
    assert_same_run(full / "last.pt", killed / "last.pt")
    assert not [p for p in killed.iterdir() if p.name.startswith(".")]  # no stale temporary checkpoint
