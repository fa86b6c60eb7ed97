"""Trainers with per-voxel distribution losses: Dual Focal, Dual CE, Focal, Recall (papers 000, 002)."""

from segbalance.trainers.base import SegBalanceTrainer


class nnUNetTrainerDFL(SegBalanceTrainer):
    """Dual Focal loss (000, Eq. 8), registry ``"dfl"``, α = β = γ = ρ = 1."""

    def _build_loss(self):
        return self.segbalance_loss("dfl")


class nnUNetTrainerDCE(SegBalanceTrainer):
    """Dual cross-entropy (000, Eq. 4), registry ``"dce"``, its defaults."""

    def _build_loss(self):
        return self.segbalance_loss("dce")


class nnUNetTrainerFocal(SegBalanceTrainer):
    """Softmax focal loss (000 Eq. 5 / 004 Eq. 5), registry ``"focal"``, its defaults (γ = 2)."""

    def _build_loss(self):
        return self.segbalance_loss("focal")


class nnUNetTrainerRecall(SegBalanceTrainer):
    """Recall loss (002, Eq. 5), registry ``"recall"``: CE weighted by each class's batch FN rate.

    Under DDP the TP/FN counts are all-reduced by the loss, so every rank uses the same weights.
    """

    def _build_loss(self):
        return self.segbalance_loss("recall")
