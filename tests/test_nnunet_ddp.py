"""Recall loss under nnU-Net's DDP: two CPU processes (gloo) must use the same class weights.

Each rank computes the recall loss (002, Eq. 5) on its own half of a batch. With the TP/FN counts
all-reduced, rank r's loss is the mean over its voxels of ``w_y · CE`` with
``w_c = FN_c / (FN_c + TP_c)`` counted over the *whole* batch: computed here by hand, single-process, on
the concatenated batch, and compared with what each rank returns.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from segbalance.monai_losses import get

WORLD = 2


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits/targets whose halves have very different recall, so local and global weights differ."""
    g = torch.Generator().manual_seed(7)
    target = torch.randint(0, 3, (2 * WORLD, 1, 6, 8, 8), generator=g)
    logits = torch.randn(2 * WORLD, 3, 6, 8, 8, generator=g)
    onehot = F.one_hot(target[:, 0], 3).movedim(-1, 1).float()
    logits[:2] += 4.0 * onehot[:2]  # rank 0: mostly right; rank 1: mostly wrong
    logits[2:] -= 2.0 * onehot[2:]
    return logits, target


def recall_weights(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = logits.argmax(1)
    y = target[:, 0]
    tp = torch.stack([((pred == c) & (y == c)).sum() for c in range(3)]).float()
    fn = torch.stack([((pred != c) & (y == c)).sum() for c in range(3)]).float()
    return torch.where(tp + fn > 0, fn / (tp + fn).clamp_min(1), torch.zeros_like(tp))


def hand_loss(logits, target, weights) -> torch.Tensor:
    ce = F.cross_entropy(logits, target[:, 0], reduction="none")
    return (weights[target[:, 0]] * ce).mean()


def _worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        logits, target = batch()
        mine = slice(2 * rank, 2 * rank + 2)
        loss = get("recall")(logits[mine], target[mine])
        torch.save({"loss": loss.detach()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns two processes
def test_recall_weights_identical_across_ranks(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    logits, target = batch()
    global_w = recall_weights(logits, target)
    for rank in range(WORLD):
        mine = slice(2 * rank, 2 * rank + 2)
        got = torch.load(tmp_path / f"rank{rank}.pt")["loss"]
        torch.testing.assert_close(got, hand_loss(logits[mine], target[mine], global_w))
        local_w = recall_weights(logits[mine], target[mine])
        assert not torch.allclose(local_w, global_w)  # the test data make the all-reduce visible
        # a single process on the concatenated batch uses the same weights
    torch.testing.assert_close(get("recall")(logits, target), hand_loss(logits, target, global_w))
