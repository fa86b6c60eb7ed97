"""Trainers with distance-based losses: GDL + boundary (α rebalanced per epoch) and HD-DT (paper 004 §4).

Signed distance maps are computed from each deep-supervision scale's target on the fly, on the logits'
device, with the configuration's spacing scaled by that scale's pooling factor
(:class:`~segbalance.nnunet_losses.ScaleAwareLoss`).
"""

from segbalance.trainers.base import SegBalanceTrainer


class nnUNetTrainerBoundary(SegBalanceTrainer):
    """``(1 − α)·GDL + α·boundary``, registry ``"gdl_boundary"``, α = 0.01 + 0.01·epoch (max 0.99).

    The schedule follows the epoch counter and is saved in the checkpoint, so ``--c`` resumes it.
    """

    def _build_loss(self):
        return self.segbalance_loss("gdl_boundary")


class nnUNetTrainerHDDT(SegBalanceTrainer):
    """Hausdorff distance-transform loss (004 §4.2, Karimi & Salcudean), registry ``"hd_dt"``, α = 2."""

    def _build_loss(self):
        return self.segbalance_loss("hd_dt")
