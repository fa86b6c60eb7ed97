"""segbalance train: a few CPU steps in 2D and 3D, resume, the NaN error, DDP with two gloo processes.

Exact resume, option changes and divergence: test_training_resume.py; safe checkpoint loading:
test_training_checkpoint.py; data checks, window and sampler: test_training_data.py.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from segbalance.synthetic import write_phantom_dataset
from segbalance.training import NonFiniteLossError, TrainConfig, engine, load_model, predict_volume, train
from segbalance.training.checkpoint import load_checkpoint

SHAPE = (12, 32, 32)
TINY = dict(channels=(4, 8, 16), batch_size=4, steps_per_epoch=2, progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    write_phantom_dataset(root, 3, seed=0, shape=SHAPE)
    return root


@pytest.mark.parametrize("dim,size", [(2, (32, 32)), (3, (8, 16, 16))])
def test_train_resume_predict(tmp_path, data, dim, size):
    cfg = dict(out=str(tmp_path / "run"), data=str(data), dim=dim, size=size, samples_per_volume=2, **TINY)
    path = train(TrainConfig(epochs=1, **cfg))
    first = load_checkpoint(path)
    assert first["epoch"] == 0 and first["info"]["loss"] == "ce" and first["info"]["num_classes"] == 3
    # resume: same weights as saved before the next epoch, epoch counter continues
    seen = {}
    original = engine.build_model

    def spy(*args, **kwargs):
        model = original(*args, **kwargs)
        seen["model"] = model
        return model

    engine.build_model = spy
    try:
        cfg["resume"] = True
        train(
            TrainConfig(
                epochs=2, steps_per_epoch=0, **{k: v for k, v in cfg.items() if k != "steps_per_epoch"}
            )
        )
    finally:
        engine.build_model = original
    for k, v in seen["model"].state_dict().items():
        torch.testing.assert_close(
            v, first["model"][k], rtol=0, atol=0
        )  # 0 steps: weights are the saved ones
    second = load_checkpoint(path)
    assert second["epoch"] == 1 and len(second["history"]) == 2
    model, info = load_model(path)
    pred = predict_volume(model, info, torch.randn(SHAPE).numpy() * 100)
    assert pred.shape == SHAPE and pred.max() < 3


def test_resume_continues_training(tmp_path, data):
    cfg = dict(out=str(tmp_path / "run"), data=str(data), dim=2, size=(32, 32), **TINY)
    train(TrainConfig(epochs=1, **cfg))
    w0 = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    train(TrainConfig(epochs=2, resume=True, **cfg))
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["epoch"] == 1
    assert any(not torch.equal(w0[k], ck["model"][k]) for k in w0)  # it trained further


def test_resume_without_checkpoint_and_bad_loss(tmp_path, data):
    with pytest.raises(FileNotFoundError, match="last.pt"):
        train(TrainConfig(out=str(tmp_path), data=str(data), resume=True, **TINY))
    with pytest.raises(ValueError, match="unknown loss name 'nope'"):
        train(TrainConfig(out=str(tmp_path), data=str(data), loss="nope", **TINY))
    with pytest.raises(ValueError, match="dim"):
        TrainConfig(dim=4)


def test_nan_loss_names_epoch_step_and_loss(tmp_path, data, monkeypatch):
    class NaNLoss(torch.nn.Module):
        def forward(self, logits, target):
            return logits.mean() * float("nan")

    monkeypatch.setattr(engine, "_loss_fn", lambda *args: NaNLoss())
    with pytest.raises(NonFiniteLossError, match=r"loss 'ce'.*epoch 1 step 1"):
        train(TrainConfig(out=str(tmp_path), data=str(data), dim=2, size=(32, 32), epochs=1, **TINY))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    """One DDP rank; records its model's parameter checksum and its local loss values in rank<r>.json."""
    os.environ.update(
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    seen, losses = {}, []
    build_model, loss_fn = engine.build_model, engine._loss_fn

    def spy_model(*args, **kwargs):
        seen["model"] = build_model(*args, **kwargs)
        return seen["model"]

    class RecordingLoss(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, logits, target):
            value = self.inner(logits, target)
            losses.append(float(value.detach()))
            return value

    engine.build_model = spy_model
    engine._loss_fn = lambda *args: RecordingLoss(loss_fn(*args))
    try:
        train(TrainConfig(out=out, data=data, dim=2, size=(32, 32), epochs=1, device="cpu", **TINY))
    finally:
        torch.distributed.destroy_process_group()
    checksum = float(sum(p.detach().double().sum() for p in seen["model"].parameters()))
    (Path(out) / f"rank{rank}.json").write_text(json.dumps({"losses": losses, "checksum": checksum}))


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, data):
    import torch.multiprocessing as mp

    out = tmp_path / "ddp"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(data), str(out)), nprocs=2, join=True)
    records = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert records[0]["checksum"] == records[1]["checksum"]  # gradients were all-reduced: replicas agree
    # each rank saw its own half of the data: different local losses
    assert records[0]["losses"] != records[1]["losses"]
    assert not list(out.glob("history_rank*"))  # no test-only files written by the training code
    assert load_checkpoint(out / "last.pt")["epoch"] == 0


def test_boundary_weight_follows_the_epoch_and_resume(tmp_path, data):
    """gdl_boundary's α is 0.01 + 0.01·epoch in every epoch, also after --resume (Kervadec's schedule)."""
    cfg = dict(out=str(tmp_path / "run"), data=str(data), dim=2, size=(32, 32), loss="gdl_boundary", **TINY)
    train(TrainConfig(epochs=2, **cfg))
    train(TrainConfig(epochs=3, resume=True, **cfg))
    history = load_checkpoint(tmp_path / "run" / "last.pt")["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert [h["alpha"] for h in history] == pytest.approx([0.01, 0.02, 0.03])


def test_training_on_a_test_split_writes_predictions_where_evaluate_reads_them(tmp_path):
    """``train --data`` with an ``imagesTs/`` folder predicts its cases into ``<out>/pred`` (input geometry),
    the folder the README's ``segbalance evaluate --pred NAME=<out>/pred`` example reads."""
    from segbalance.io.volumes import read_volume, write_volume
    from segbalance.synthetic import make_phantom

    root = tmp_path / "data"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True)
    for seed, split in ((0, "Tr"), (1, "Tr"), (7, "Ts")):
        ph = make_phantom(SHAPE, seed=seed)
        write_volume(ph.image_volume(), root / f"images{split}" / f"case{seed}_0000.nii.gz")
        if split == "Tr":
            write_volume(ph.label_volume(), root / "labelsTr" / f"case{seed}.nii.gz")
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), data=str(root), dim=2, size=(32, 32), epochs=1, **TINY))
    pred_file = out / "pred" / "case7.nii.gz"
    assert sorted(p.name for p in (out / "pred").glob("*.nii.gz")) == ["case7.nii.gz"]
    image, pred = read_volume(root / "imagesTs" / "case7_0000.nii.gz"), read_volume(pred_file)
    assert pred.shape == image.shape
    assert pred.spacing == pytest.approx(image.spacing) and pred.origin == pytest.approx(image.origin)
    assert set(int(v) for v in torch.from_numpy(pred.array).unique()) <= {0, 1, 2}
    # --no-predict (predict_test=False) leaves no prediction behind
    train(TrainConfig(out=str(tmp_path / "run2"), data=str(root), dim=2, size=(32, 32), epochs=1,
                      predict_test=False, **TINY))
    assert not (tmp_path / "run2" / "pred").exists()


def test_bad_device_is_a_one_line_error(tmp_path, capsys):
    from segbalance.cli import main

    assert main(["train", "--out", str(tmp_path / "run"), "--device", "gpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segbalance train: error: --device must be cpu, cuda or cuda:N, got 'gpu'")
    assert "Traceback" not in err and not (tmp_path / "run").exists()  # refused before anything is written
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"--device cuda: torch.cuda.is_available\(\) is False"):
            train(TrainConfig(out=str(tmp_path / "run"), device="cuda", progress=False))


def test_resume_removes_a_checkpoint_half_written_by_a_killed_run(tmp_path, data):
    """A SIGKILL during ``save_checkpoint`` leaves ``.last.pt.<random>.segbalance-tmp``; the next run of the
    same folder deletes it (it never counts as a checkpoint) and leaves the user's own files alone."""
    cfg = dict(out=str(tmp_path / "run"), data=str(data), dim=2, size=(32, 32), **TINY)
    train(TrainConfig(epochs=1, **cfg))
    stale = tmp_path / "run" / ".last.pt.k1ll3d.segbalance-tmp"
    stale.write_bytes(b"half a checkpoint")
    mine = tmp_path / "run" / "notes.txt"
    mine.write_text("the user's file")
    train(TrainConfig(epochs=2, resume=True, **cfg))
    assert not stale.exists() and mine.read_text() == "the user's file"
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
