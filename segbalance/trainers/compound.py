"""Trainers with compound losses (weighted sums of registered losses sharing one prepared input)."""

from segbalance.trainers.base import SegBalanceTrainer


class nnUNetTrainerDFLDice(SegBalanceTrainer):
    """Dual Focal + Dice, registry ``"compound"`` with terms ``{"dfl": 1, "dice": 1}``."""

    def _build_loss(self):
        return self.segbalance_loss("compound", terms={"dfl": 1.0, "dice": 1.0})
