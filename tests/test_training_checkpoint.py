"""Checkpoints are loaded with weights_only=True: a crafted file cannot run code, bad files give one line."""

from __future__ import annotations

import pathlib

import pytest
import torch

from segbalance import monai_losses
from segbalance.training import load_model
from segbalance.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


class _TouchOnLoad:
    """Unpickling this calls ``Path.touch(marker)``: what a malicious checkpoint would do with os.system."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_crafted_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "info": {"dim": 2}, "payload": _TouchOnLoad(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: refused to load: unpickling it would run code")
    assert "\n" not in message
    assert not marker.exists()
    with pytest.raises(ValueError, match="refused to load"):  # load_model goes through the same door
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("zip_format", [True, False])
def test_truncated_checkpoint_names_the_file(tmp_path, zip_format):
    path = tmp_path / "last.pt"
    state = {"model": {"w": torch.arange(4096.0)}, "info": {"dim": 2}}
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last\.pt: truncated or corrupt checkpoint"):
        load_checkpoint(path)


def test_foreign_and_non_checkpoint_files(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, foreign)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(foreign)
    assert str(err.value) == (
        f"{foreign}: not a segbalance checkpoint (no 'model'/'info' dictionary; "
        f"found ['epoch', 'state_dict'])"
    )
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint at all\n")
    with pytest.raises(CheckpointError, match=r"notes\.pt: not a PyTorch checkpoint"):
        load_checkpoint(text)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt: no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")
    half = tmp_path / "half.pt"  # the keys are there but the info does not describe a model
    save_checkpoint(half, {"model": {}, "info": {"loss": "ce"}})
    with pytest.raises(CheckpointError, match=r"half\.pt: not a segbalance checkpoint \(its info has no"):
        load_model(half)


def test_save_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / "last.pt"
    state = {"model": {"w": torch.randn(3)}, "info": {"dim": 3, "size": [8, 16, 16], "window": None}}
    save_checkpoint(path, state)
    save_checkpoint(path, {**state, "epoch": 1})  # overwrite in place
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left


@pytest.mark.parametrize("name", [n for n in monai_losses.names() if n != "compound"])
def test_every_loss_state_survives_a_weights_only_checkpoint(tmp_path, name):
    """Whatever state a loss keeps (recall's EMA counts, the boundary schedule) is plain tensors/values,
    and the reloaded loss gives exactly the next value of the original."""
    kwargs = {"ema": 0.9} if name == "recall" else {}
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 6, 6), torch.randint(0, 3, (2, 1, 6, 6))
    loss = monai_losses.get(name, **kwargs).train()
    loss(logits, target)
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "info": {}, "loss": loss.state_dict()})
    fresh = monai_losses.get(name, **kwargs).train()
    fresh.load_state_dict(load_checkpoint(tmp_path / "c.pt")["loss"])
    logits2 = torch.randn(2, 3, 6, 6)
    assert torch.equal(fresh(logits2, target), loss(logits2, target))
