"""``compile_loss(loss)``: the loss's math runs under ``torch.compile``, its input checks eagerly.

The input checks of every loss (:func:`~.inputs.prepare`: NaN/Inf, label range) read values back from the
device; under ``torch.compile`` each of them is a graph break (``Tensor.item()``), so compiling the whole
module compiles several small graphs. :func:`compile_loss` instead compiles ``forward_prepared``, the loss
math, in place: the checks and the one-hot conversion stay eager, the math becomes one graph (per input
shape). The module stays the same object, so its ``state_dict``, attributes and per-epoch schedules are
untouched. Values and gradients equal the eager loss (``tests/test_losses_compile.py``); what it gains per
loss is measured by ``benchmarks/losses.py --compile`` (docs/benchmarks.md). Losses that do host work per
step (the distance transforms of ``boundary``, ``hd_dt``, ``dpce``; the selection of ``topk``/``ohem``)
keep graph breaks there.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from segbalance.monai_losses.base import SegLoss
from segbalance.monai_losses.inputs import Prepared

__all__ = ["compile_loss", "is_compiled"]


class _CompiledMath:
    """``loss.forward_prepared`` compiled: the :class:`~.inputs.Prepared` bundle is passed as its tensors."""

    def __init__(self, loss: SegLoss, **compile_kwargs) -> None:
        self._method = type(loss).forward_prepared.__get__(loss)
        self._fn = torch.compile(self._tensors, **compile_kwargs)

    def _tensors(self, logits: Tensor, onehot: Tensor, labels, valid, binary, activation: str, *a, **kw):
        return self._method(Prepared(logits, onehot, labels, valid, binary, activation), *a, **kw)

    def __call__(self, p: Prepared, *args, **kwargs) -> Tensor:
        return self._fn(p.logits, p.onehot, p.labels, p.valid, p.binary, p.activation, *args, **kwargs)


def is_compiled(loss: nn.Module) -> bool:
    """Whether :func:`compile_loss` was applied to ``loss``."""
    return isinstance(loss.__dict__.get("forward_prepared"), _CompiledMath) or bool(
        getattr(loss, "_segbalance_compiled", False)
    )


def compile_loss(loss: nn.Module, **compile_kwargs) -> nn.Module:
    """Compile ``loss``'s math with ``torch.compile(**compile_kwargs)``, in place; returns ``loss``.

    segbalance losses keep their class, ``state_dict`` and attributes; a ``compound`` loss compiles each
    term. Any other module is returned as ``torch.compile(loss)``. Compiling twice is a no-op.

    Example:
        >>> from segbalance.monai_losses import get, compile_loss
        >>> loss = compile_loss(get("dfl"))  # compiles on the first call
        >>> loss.registry_name, type(loss).__name__
        ('dfl', 'DualFocalLoss')
    """
    if not isinstance(loss, SegLoss):
        return torch.compile(loss, **compile_kwargs)
    if is_compiled(loss):
        return loss
    terms = getattr(loss, "terms", None)
    if isinstance(terms, nn.ModuleDict):  # compound: its forward calls the terms
        for term in terms.values():
            compile_loss(term, **compile_kwargs)
        loss._segbalance_compiled = True
    else:
        loss.forward_prepared = _CompiledMath(loss, **compile_kwargs)
    return loss
