"""Forms of the papers' losses that learn a rare class through nnU-Net (docs/rare-class.md).

Alone, at nnU-Net's regime (3D patches, SGD, a lesion class at ~0.8 % of the voxels), Dual Focal loss at the
paper's defaults never switches the lesion class on. Measured on the runs' own batches (docs/rare-class.md):
within two epochs every loss drives the lesion's probability to ~1e-4 (the class is predicted nowhere),
and from there only the pull on the missed lesion voxels can bring it back. Cross-entropy pulls the lesion
logit alone. DFL's negative term ``−β log(ρ − z_j)`` of the class ``j`` that *is* predicted there (the organ,
``z_j → 1``) has the gradient ``β/(ρ − z_j)``, which at ``ρ = 1`` grows without bound; through the softmax it
lowers ``u_j`` and raises every other logit in proportion to its probability, so most of the correction
goes to background, which is more probable there than the lesion. With ``ρ = 2`` the term stays bounded and
DFL pulls like CE. nnU-Net's default learns the class because its Dice term over the foreground classes adds
a pull in proportion to the class's own volume once it is predicted at all. The registered names of the
papers' losses (``dfl``, ``hd_dt``, ``combo``) keep computing the papers' formulas.
"""

from __future__ import annotations

from segbalance.monai_losses.compound import CompoundLoss
from segbalance.monai_losses.registry import register

__all__ = ["DualFocalDiceLoss", "dfl_negative_push", "dfl_missed_voxel_gradient"]


def dfl_negative_push(alpha: float = 1.0, beta: float = 1.0, rho: float = 1.0) -> float:
    """``κ = 1 + β/ρ + 2α``: Dual Focal loss's gradient on a class's logit at a confidently classified voxel
    of another class, in units of cross-entropy's (γ = 1).

    With softmax ``z`` and the voxel's class ``t`` predicted at ``z_t → 1``, Eq. 8 (sign of Eq. 7) gives
    ``∂L/∂z_t = −1/z_t − α`` and ``∂L/∂z_j = β/(ρ − z_j) + α`` for ``j ≠ t``, so through the softmax
    ``∂L/∂u_j = z_j (∂L/∂z_j − Σ_k z_k ∂L/∂z_k) → z_j (β/ρ + α + 1 + α)``, against CE's ``z_j``.

    Example:
        >>> dfl_negative_push()  # the paper's defaults α = β = ρ = 1
        4.0
    """
    return 1.0 + beta / rho + 2.0 * alpha


def dfl_missed_voxel_gradient(probs, target: int, alpha: float = 1.0, beta: float = 1.0, rho: float = 1.0):
    """DFL's gradient ``∂L/∂u`` (γ = 1) on the logits of one voxel of class ``target`` with softmax ``probs``:
    ``z_k (g_k − Σ_j z_j g_j)``, ``g_t = −1/z_t − α``, ``g_j = β/(ρ − z_j) + α`` (Eq. 8, sign of Eq. 7).

    Example: a lesion voxel (class 2) predicted as organ; at ρ = 1 the background logit is raised almost as
    much as the lesion's, at ρ = 2 it is lowered, as cross-entropy lowers it.

        >>> [round(g, 2) for g in dfl_missed_voxel_gradient([0.0099, 0.99, 0.0001], 2)]
        [-0.96, 1.97, -1.01]
        >>> [round(g, 3) for g in dfl_missed_voxel_gradient([0.0099, 0.99, 0.0001], 2, rho=2)]
        [0.005, 0.995, -1.0]
    """
    z = [float(p) for p in probs]
    g = [(-1.0 / zk - alpha) if k == target else (beta / (rho - zk) + alpha) for k, zk in enumerate(z)]
    mean = sum(zk * gk for zk, gk in zip(z, g))
    return [zk * (gk - mean) for zk, gk in zip(z, g)]


@register("dfl_dc")
class DualFocalDiceLoss(CompoundLoss):
    """``L = w_dfl·L_DFL + w_dice·L_Dice^fg``: Dual Focal loss with nnU-Net's Dice term beside it, as nnU-Net
    puts the Dice term beside cross-entropy (Hossain et al. 2021, Eq. 8; Isensee et al. 2021).

    ``L_DFL`` is :class:`~segbalance.monai_losses.focal.DualFocalLoss` (``alpha``, ``beta``, ``gamma``,
    ``rho``; every class, mean over voxels). ``L_Dice^fg`` is the soft Dice loss over the **foreground**
    classes (nnU-Net's ``do_bg=False``), per image or pooled over the batch (``batch``, nnU-Net's
    ``batch_dice``). Both weights default to 1, as in nnU-Net's ``DC_and_CE_loss``. The trainer
    ``nnUNetTrainerDFLDC`` uses ``rho = 2``: at the paper's ``rho = 1`` DFL sends most of its correction of a
    missed voxel to the background logit (module doc, docs/rare-class.md), and the class never switches on.

    Example:
        >>> import torch
        >>> logits, target = torch.zeros(1, 2, 1, 2), torch.tensor([[[[1, 0]]]])
        >>> # DFL = ln 2 + ln 2 + 2·0.5 = 2.386; Dice loss of class 1 = 1 − 2·0.5/(1 + 1) = 0.5
        >>> round(float(DualFocalDiceLoss(smooth_nr=0, smooth_dr=0)(logits, target)), 4)
        2.8863
    """

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 1.0,
        rho: float = 1.0,
        dfl_weight: float = 1.0,
        dice_weight: float = 1.0,
        batch: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        **kwargs,
    ) -> None:
        for name, value in (("alpha", alpha), ("beta", beta), ("dfl_weight", dfl_weight),
                            ("dice_weight", dice_weight)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"DualFocalDiceLoss: {name} must be a number >= 0, got {value!r}")
        if not isinstance(rho, (int, float)) or isinstance(rho, bool) or rho < 1:
            raise ValueError(f"DualFocalDiceLoss: rho must be a number >= 1, got {rho!r}")
        self.batch = bool(batch)
        terms = {
            "dfl": {"weight": float(dfl_weight),
                    "kwargs": {"alpha": alpha, "beta": beta, "gamma": gamma, "rho": rho}},
            "dice": {"weight": float(dice_weight),
                     "kwargs": {"include_background": False, "batch": self.batch,
                                "smooth_nr": smooth_nr, "smooth_dr": smooth_dr}},
        }
        super().__init__(terms=terms, **kwargs)
