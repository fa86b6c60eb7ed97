"""The one table of segbalance nnU-Net trainers: class name → registered loss, its arguments, docstring.

:mod:`segbalance.trainers.generated` builds one ``nnUNetTrainer…`` class per row (plus ``_5epochs`` and
``_debug`` variants), the ``nnUNet_extTrainer`` shim re-exports them, and the docs, the CLI and the tests
read the same rows. Built-in losses are listed here; a new loss declares its trainer where it is defined,
``@register("name", trainer="Name")`` (docs/adding-a-loss.md), and :func:`trainer_specs` adds it.
Importing this module does not import nnunetv2.
"""

from __future__ import annotations

from segbalance.monai_losses.registry import TrainerSpec, declared_trainers

__all__ = [
    "BUILTIN_TRAINERS",
    "CONFIGURABLE_TRAINER",
    "VARIANTS",
    "TrainerSpec",
    "trainer_specs",
    "trainer_losses",
]

#: the trainer whose loss comes from ``SEGBALANCE_LOSS`` (``segbalance.trainers.configurable``)
CONFIGURABLE_TRAINER = "nnUNetTrainerSegBalance"

#: suffix → (epochs, iterations per epoch or None for nnU-Net's 250, validation iterations or None)
VARIANTS: dict[str, tuple[int, int | None, int | None]] = {"_5epochs": (5, None, None), "_debug": (2, 2, 1)}

_ROWS: list[tuple[str, str, dict, str]] = [
    # papers 000, 002: per-voxel distribution losses
    ("DFL", "dfl", {}, "Dual Focal loss (000, Eq. 8), α = β = γ = ρ = 1."),
    ("DCE", "dce", {}, "Dual cross-entropy (000, Eq. 4), its defaults."),
    ("Focal", "focal", {}, "Softmax focal loss (000 Eq. 5 / 004 Eq. 5), γ = 2."),
    (
        "Recall",
        "recall",
        {},
        "Recall loss (002, Eq. 5): CE weighted by each class's batch FN rate; counts all-reduced under DDP.",
    ),
    # paper 003: label-marginal penalties added to CE
    ("CEL1", "ce_l1", {}, "CE + λ·L1 between label and predicted proportions (003; τ = 10, λ = 1)."),
    ("CEKL", "ce_kl", {}, "CE + λ·KL(label ‖ predicted proportions) (003; τ = 10, λ = 0.1)."),
    ("DiceBiasCE", "ce_dicebias", {}, "CE + λ·mean log(p̂ + ŷ), the DiceBias penalty (003)."),
    # region (overlap) losses
    ("GDL", "gdl", {}, "Generalized Dice loss (1/volume² class weights), its defaults."),
    ("Tversky", "tversky", {}, "Tversky loss, fp_weight 0.3, fn_weight 0.7."),
    ("FocalTversky", "focal_tversky", {}, "Focal Tversky loss (exponent per class), its defaults."),
    ("Combo", "combo", {}, "Combo loss α·weighted CE − (1 − α)·Dice, its defaults."),
    ("ExpLog", "explog", {}, "Exponential logarithmic loss (log-Dice and log-CE powers), its defaults."),
    # distance losses (paper 004 §4); distance maps per deep-supervision scale, spacing-aware
    (
        "Boundary",
        "gdl_boundary",
        {},
        "(1 − α)·GDL + α·boundary (004 §4.1), α = 0.01 + 0.01·epoch ≤ 0.99, set from the epoch.",
    ),
    ("HDDT", "hd_dt", {}, "Hausdorff distance-transform loss (004 §4.2, Karimi & Salcudean), α = 2."),
    # instance-imbalance losses: components / Voronoi regions made per sample in the data loader
    (
        "Blob",
        "blob",
        {},
        "Blob loss (Kofler et al. 2023): 2·(Dice + CE) + mean over GT components of Dice + CE on the"
        " component and the background, the other components left out.",
    ),
    (
        "CCDiceCE",
        "cc_dice_ce",
        {},
        "CC-DiceCE (Bouteille, Jaus et al. 2025): Dice + CE per Voronoi region of the GT components,"
        " averaged; global Dice + CE for a patch without lesion.",
    ),
    # compound losses
    ("DFLDice", "compound", {"terms": {"dfl": 1.0, "dice": 1.0}}, "Dual Focal + Dice."),
    # the forms that learn a rare class through nnU-Net (docs/rare-class.md): the trainers to use
    (
        "DFLDC",
        "dfl_dc",
        {"rho": 2.0},
        "Dual Focal loss (ρ = 2) + nnU-Net's foreground Dice: the DFL trainer to use.",
    ),
    (
        "HDDTDiceCE",
        "dice_ce_hd_dt",
        {},
        "(1 − α)·(foreground Dice + CE) + α·HD-DT (004 §4.2), α = 0.01 + 0.01·epoch (uncapped;"
        " HDDTDiceCECap is the HD-DT trainer to use).",
    ),
    (
        "HDDTDiceCECap",
        "dice_ce_hd_dt",
        {"alpha_max": 0.1},
        "As HDDTDiceCE with α capped at 0.1 (α = 0.01 + 0.01·epoch ≤ 0.1): the HD-DT trainer to use;"
        " the region term keeps teaching the small lesions while HD-DT sharpens them.",
    ),
    (
        "ComboBeta09",
        "combo",
        {"beta": 0.9},
        "Combo loss with β = 0.9 (the paper's β > 0.5, false negatives weighed more): of a missed voxel's"
        " correction, (1 − β)/β instead of all goes to the background logit. The Combo trainer to use.",
    ),
]

#: the built-in rows as :class:`TrainerSpec`, by class name
BUILTIN_TRAINERS: dict[str, TrainerSpec] = {
    f"nnUNetTrainer{short}": TrainerSpec(
        f"nnUNetTrainer{short}", loss, kwargs, f"{doc} Registry ``{loss!r}``."
    )
    for short, loss, kwargs, doc in _ROWS
}


def trainer_specs() -> dict[str, TrainerSpec]:
    """Every loss trainer: the built-in rows, then those declared by ``register(..., trainer=…)``.

    ``ValueError`` when a declared trainer reuses a built-in name (or the configurable trainer's) for
    another loss.
    """
    specs = dict(BUILTIN_TRAINERS)
    for name, spec in declared_trainers().items():
        if name == CONFIGURABLE_TRAINER or (name in specs and specs[name].loss != spec.loss):
            raise ValueError(f"loss {spec.loss!r} declares trainer {name!r}, which already exists")
        specs.setdefault(name, spec)
    return specs


def trainer_losses() -> dict[str, str]:
    """Trainer class name → registry loss name, for every generated loss trainer."""
    return {name: spec.loss for name, spec in trainer_specs().items()}
