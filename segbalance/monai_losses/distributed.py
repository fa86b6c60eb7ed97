"""Tiny torch.distributed helpers: batch statistics that define a loss are pooled over all ranks.

Under nnU-Net's DDP (``-num_gpus``) each rank sees part of the batch. Two kinds of statistics are pooled:

* detached counts that set weights (recall TP/FN, inverse-frequency WCE, class-balanced CE, ExpLog's
  label frequencies): :func:`all_reduce_sum`, so every rank uses the same weights;
* differentiable batch sums (the soft TP/FP/FN of region losses with ``batch=True``) and per-image terms
  averaged over the batch (the label-marginal penalties of Liu et al. 2021): :func:`all_gather_sum` /
  :func:`all_gather_cat`, nnU-Net's ``AllGatherGrad`` (``MemoryEfficientSoftDiceLoss(ddp=True)``). Every
  rank then computes the loss of the whole global batch; the backward all-reduces the gradient, so after
  DDP's gradient averaging the parameters get the gradient of one process on the concatenated batch.

Without an initialised process group (or with one rank) all helpers return their input. With one, these
losses are collectives: every rank must call them, in the same order, with the same local batch shape
(nnU-Net's and ``segbalance train``'s training and validation steps do).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["is_distributed", "all_reduce_sum", "all_gather_sum", "all_gather_cat", "AllGatherGrad"]


def is_distributed() -> bool:
    """``True`` when torch.distributed is available, initialised and has more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` over all ranks (a detached copy); returns ``t`` detached unchanged when not distributed.

    The input is never modified in place.
    """
    out = t.detach().clone()
    if is_distributed():
        with torch.no_grad():
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


class AllGatherGrad(torch.autograd.Function):
    """``(world, *t.shape)``: ``t`` of every rank, stacked; the backward sums the incoming gradients over
    the ranks and returns this rank's slice (as ``nnunetv2.utilities.ddp_allgather.AllGatherGrad``, which
    segbalance's core does not import)."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        gathered = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, t.contiguous())
        return torch.stack(gathered, dim=0)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[dist.get_rank()]


def all_gather_sum(t: Tensor) -> Tensor:
    """The sum of ``t`` over all ranks, differentiable (gradients reach every rank's ``t``)."""
    if not is_distributed():
        return t
    return AllGatherGrad.apply(t).sum(0)


def all_gather_cat(t: Tensor) -> Tensor:
    """Every rank's ``t`` concatenated along dim 0 (rank order), differentiable: per-image values of the
    global batch. Ranks must hold the same shape."""
    if not is_distributed():
        return t
    return AllGatherGrad.apply(t).flatten(0, 1)
