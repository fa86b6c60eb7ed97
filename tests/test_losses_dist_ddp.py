"""Under torch.distributed (gloo, 2 ranks) batch statistics are pooled over the ranks.

* Batch-count weights are all-reduced: every rank uses the weights of the whole global batch (recall,
  inverse-frequency WCE, class-balanced CE).
* Differentiable batch sums (region losses with ``batch=True``) and per-image label-marginal penalties
  are all-gathered with gradient (nnU-Net's ``AllGatherGrad``): every rank reports the loss of the global
  batch, and after DDP's gradient averaging a shared parameter gets the gradient of one process on the
  concatenated batch.
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segbalance.monai_losses import get

pytestmark = pytest.mark.slow  # spawns two processes (gloo)

NAMES = ("recall", "wce", "cb_ce")

# (name, kwargs): losses whose value depends on batch statistics with gradient
GATHERED = (
    ("dice", {"batch": True}),
    ("gdl", {"batch": True}),
    ("tversky", {"batch": True}),
    ("ss", {"batch": True}),
    ("hd_dt", {"batch": True}),
    ("dice_ce", {"batch": True}),
    ("combo", {"batch": True}),
    ("explog", {"batch": True}),
    ("ce_l1", {}),
    ("ce_kl", {}),
    ("ce_dicebias", {}),
    ("marginal_l1", {}),
    ("marginal_kl", {}),
)


def _batch():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 3, 6, 6, generator=g)
    target = torch.randint(0, 3, (2, 1, 6, 6), generator=g)
    target[1] = 0  # rank 1 alone sees a single-class batch
    return logits, target


def _value_and_param_grad(name: str, kwargs: dict, logits: torch.Tensor, target: torch.Tensor):
    """Loss of ``θ ⊙ logits`` and its gradient w.r.t. the shared parameter ``θ`` (a stand-in network)."""
    theta = torch.ones(1, logits.shape[1], *logits.shape[2:], dtype=torch.float32, requires_grad=True)
    value = get(name, **kwargs)(theta * logits, target)
    (grad,) = torch.autograd.grad(value, theta)
    return value.detach(), grad


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        logits, target = _batch()
        local = logits[rank : rank + 1], target[rank : rank + 1]
        results = {}
        for name in NAMES:
            loss = get(name)
            results[name] = loss.class_weights(loss.prepare(*local))
        for name, kwargs in GATHERED:
            value, grad = _value_and_param_grad(name, kwargs, *local)
            dist.all_reduce(grad)  # what DDP does to parameter gradients (then divides by the world size)
            results["gathered:" + name] = (value, grad / 2)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results():
    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.start_processes(_worker, args=(init_file, tmp), nprocs=2, join=True, start_method="spawn")
        return [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(2)]


def test_batch_weights_are_all_reduced_across_ranks(rank_results):
    logits, target = _batch()
    for name in NAMES:
        loss = get(name)
        full = loss.class_weights(loss.prepare(logits, target))
        for r in rank_results:
            torch.testing.assert_close(r[name], full)


@pytest.mark.parametrize("name, kwargs", GATHERED, ids=[n for n, _ in GATHERED])
def test_batch_sums_and_proportions_are_all_gathered(rank_results, name, kwargs):
    logits, target = _batch()
    value, grad = _value_and_param_grad(name, kwargs, logits, target)
    gathered = [r["gathered:" + name] for r in rank_results]
    # the pooled statistics make the per-voxel CE parts the only local terms: with equal local batches
    # their mean over the ranks is the global mean, as DDP's averaging assumes
    torch.testing.assert_close(sum(v for v, _ in gathered) / 2, value, rtol=1e-5, atol=1e-6)
    for _, rank_grad in gathered:
        torch.testing.assert_close(rank_grad, grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["dice", "gdl", "tversky", "hd_dt", "marginal_l1", "marginal_kl"])
def test_pooled_value_is_the_same_on_every_rank(rank_results, name):
    """Without the all-gather each rank would report its own batch's value (checked: they differ here)."""
    logits, target = _batch()
    value, _ = _value_and_param_grad(name, dict(GATHERED)[name], logits, target)
    local = [
        _value_and_param_grad(name, dict(GATHERED)[name], logits[r : r + 1], target[r : r + 1])[0]
        for r in (0, 1)
    ]
    assert not torch.allclose(local[0], local[1])
    for r in rank_results:
        torch.testing.assert_close(r["gathered:" + name][0], value, rtol=1e-5, atol=1e-6)
