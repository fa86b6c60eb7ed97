"""Under torch.distributed (gloo, 2 ranks) batch-count weights are all-reduced: every rank uses the weights
of the whole global batch (recall, inverse-frequency WCE, class-balanced CE)."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segbalance.monai_losses import get

NAMES = ("recall", "wce", "cb_ce")


def _batch():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 3, 6, 6, generator=g)
    target = torch.randint(0, 3, (2, 1, 6, 6), generator=g)
    target[1] = 0  # rank 1 alone sees a single-class batch
    return logits, target


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        logits, target = _batch()
        results = {}
        for name in NAMES:
            loss = get(name)
            p_local = loss.prepare(logits[rank : rank + 1], target[rank : rank + 1])
            results[name] = loss.class_weights(p_local)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_batch_weights_are_all_reduced_across_ranks():
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.start_processes(_worker, args=(init_file, tmp), nprocs=2, join=True, start_method="spawn")
        r0 = torch.load(os.path.join(tmp, "rank0.pt"))
        r1 = torch.load(os.path.join(tmp, "rank1.pt"))
    logits, target = _batch()
    for name in NAMES:
        loss = get(name)
        full = loss.class_weights(loss.prepare(logits, target))
        torch.testing.assert_close(r0[name], full)
        torch.testing.assert_close(r1[name], full)
