"""Forms of the papers' losses that learn a rare class through nnU-Net (docs/rare-class.md).

Alone, at nnU-Net's regime (3D patches, SGD, a lesion class at ~0.3 % of the voxels), Dual Focal loss never
switches the lesion class on: its push on a class's *negatives* is ``κ = 1 + β/ρ + 2α`` times cross-entropy's
(``κ = 4`` at the paper's defaults), while its push on a missed voxel of the class is about CE's
(docs/rare-class.md derives both and measures them on the runs' own batches). nnU-Net's default learns the
class because its Dice term, computed over the foreground classes only, raises a missed class in proportion
to its own volume, not to the image's. The forms here keep each paper's loss and add what nnU-Net adds; the
registered names of the papers' losses (``dfl``, ``hd_dt``, ``combo``) keep computing the papers' formulas.
"""

from __future__ import annotations

from segbalance.monai_losses.compound import CompoundLoss
from segbalance.monai_losses.registry import register

__all__ = ["DualFocalDiceLoss", "dfl_negative_push"]


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


@register("dfl_dc")
class DualFocalDiceLoss(CompoundLoss):
    """``L = w_dice·L_Dice^fg + w_dfl·L_DFL``, nnU-Net's Dice term beside Dual Focal loss as nnU-Net puts it
    beside cross-entropy (Hossain et al. 2021, Eq. 8; Isensee et al. 2021).

    ``L_DFL`` is :class:`~segbalance.monai_losses.focal.DualFocalLoss` (``alpha``, ``beta``, ``gamma``,
    ``rho``; every class, mean over voxels). ``L_Dice^fg`` is the soft Dice loss over the **foreground**
    classes (nnU-Net's ``do_bg=False``), per image or pooled over the batch (``batch``, nnU-Net's
    ``batch_dice``). ``w_dfl`` defaults to ``1/κ`` with ``κ = 1 + β/ρ + 2α`` (:func:`dfl_negative_push`,
    4 at the defaults): DFL's push on a class's negatives is then CE's, so the two terms stand in the ratio
    in which nnU-Net's Dice and CE stand, and the loss stays at DC + CE's scale for nnU-Net's learning rate.
    With ``w_dfl = 1`` and ``w_dice = 1`` (segbalance's ``nnUNetTrainerDFLDice``) DFL's push on the negatives
    outweighs the Dice term's pull on a missed class about four times, and the class stays off
    (docs/rare-class.md).

    Example:
        >>> import torch
        >>> logits, target = torch.zeros(1, 2, 1, 2), torch.tensor([[[[1, 0]]]])
        >>> # DFL = ln 2 + ln 2 + 2·0.5 = 2.386, /4; Dice loss of class 1 = 1 − 2·0.5/(1 + 1)
        >>> round(float(DualFocalDiceLoss(smooth_nr=0, smooth_dr=0)(logits, target)), 4)
        1.0966
    """

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 1.0,
        rho: float = 1.0,
        dfl_weight: float | None = None,
        dice_weight: float = 1.0,
        batch: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        **kwargs,
    ) -> None:
        for name, value in (("alpha", alpha), ("beta", beta), ("dice_weight", dice_weight)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"DualFocalDiceLoss: {name} must be a number >= 0, got {value!r}")
        if not isinstance(rho, (int, float)) or isinstance(rho, bool) or rho < 1:
            raise ValueError(f"DualFocalDiceLoss: rho must be a number >= 1, got {rho!r}")
        if dfl_weight is None:
            dfl_weight = 1.0 / dfl_negative_push(alpha, beta, rho)
        elif not isinstance(dfl_weight, (int, float)) or isinstance(dfl_weight, bool) or dfl_weight < 0:
            raise ValueError(
                f"DualFocalDiceLoss: dfl_weight must be a number >= 0 or None, got {dfl_weight!r}"
            )
        self.batch = bool(batch)
        terms = {
            "dfl": {"weight": float(dfl_weight),
                    "kwargs": {"alpha": alpha, "beta": beta, "gamma": gamma, "rho": rho}},
            "dice": {"weight": float(dice_weight),
                     "kwargs": {"include_background": False, "batch": self.batch,
                                "smooth_nr": smooth_nr, "smooth_dr": smooth_dr}},
        }
        super().__init__(terms=terms, **kwargs)
