"""nnU-Net's deep-supervision weights, exactly as ``nnUNetTrainer._build_loss`` computes them."""

from __future__ import annotations

import numpy as np

__all__ = ["deep_supervision_weights"]


def deep_supervision_weights(num_scales: int, is_ddp: bool = False, compiled: bool = False) -> np.ndarray:
    """Weights ``w_i ∝ 1/2^i`` of the ``num_scales`` outputs, the lowest set to 0, normalised to sum 1.

    Under DDP without ``torch.compile`` nnU-Net sets the lowest weight to ``1e-6`` instead of 0 (DDP
    complains about unused parameters otherwise); this keeps that safeguard.

    >>> deep_supervision_weights(3).round(4).tolist()
    [0.6667, 0.3333, 0.0]
    """
    if num_scales < 1:
        raise ValueError(f"num_scales must be >= 1, got {num_scales}")
    weights = np.array([1 / (2**i) for i in range(num_scales)])
    if num_scales > 1:
        weights[-1] = 1e-6 if (is_ddp and not compiled) else 0
    return weights / weights.sum()
