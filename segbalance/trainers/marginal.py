"""Trainers with label-marginal penalties added to CE (paper 003, Eq. 5, App. C)."""

from segbalance.trainers.base import SegBalanceTrainer


class nnUNetTrainerCEL1(SegBalanceTrainer):
    """CE + λ·L1 between label and predicted proportions (τ = 10, λ = 1), registry ``"ce_l1"``."""

    def _build_loss(self):
        return self.segbalance_loss("ce_l1")


class nnUNetTrainerCEKL(SegBalanceTrainer):
    """CE + λ·KL(label ‖ predicted proportions) (τ = 10, λ = 0.1), registry ``"ce_kl"``."""

    def _build_loss(self):
        return self.segbalance_loss("ce_kl")


class nnUNetTrainerDiceBiasCE(SegBalanceTrainer):
    """CE + λ·mean log(p̂ + ŷ), the DiceBias penalty, registry ``"ce_dicebias"``."""

    def _build_loss(self):
        return self.segbalance_loss("ce_dicebias")
