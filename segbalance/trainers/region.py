"""Trainers with region (overlap) losses: Generalized Dice, Tversky, focal Tversky, Combo, Exp-Log."""

from segbalance.trainers.base import SegBalanceTrainer


class nnUNetTrainerGDL(SegBalanceTrainer):
    """Generalized Dice loss (1/volume² class weights), registry ``"gdl"``, its defaults."""

    def _build_loss(self):
        return self.segbalance_loss("gdl")


class nnUNetTrainerTversky(SegBalanceTrainer):
    """Tversky loss, registry ``"tversky"`` (fp_weight 0.3, fn_weight 0.7)."""

    def _build_loss(self):
        return self.segbalance_loss("tversky")


class nnUNetTrainerFocalTversky(SegBalanceTrainer):
    """Focal Tversky loss (exponent per class), registry ``"focal_tversky"``, its defaults."""

    def _build_loss(self):
        return self.segbalance_loss("focal_tversky")


class nnUNetTrainerCombo(SegBalanceTrainer):
    """Combo loss ``α·weighted CE − (1 − α)·Dice``, registry ``"combo"``, its defaults."""

    def _build_loss(self):
        return self.segbalance_loss("combo")


class nnUNetTrainerExpLog(SegBalanceTrainer):
    """Exponential logarithmic loss (log-Dice and log-CE powers), registry ``"explog"``, its defaults."""

    def _build_loss(self):
        return self.segbalance_loss("explog")
