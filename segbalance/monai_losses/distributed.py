"""Tiny torch.distributed helpers: batch statistics that define a loss are summed over all ranks.

Under nnU-Net's DDP (``-num_gpus``) each rank sees part of the batch; losses whose weights come from
batch counts (recall, inverse-frequency WCE, class-balanced CE) all-reduce those counts so every rank
uses the same weights. Without an initialised process group both helpers are no-ops.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["is_distributed", "all_reduce_sum"]


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
