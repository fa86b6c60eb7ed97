"""The loss library: every loss of the four papers as a function plus an ``nn.Module`` in MONAI's conventions.

``get(name, **kwargs)`` returns a registered loss module, ``names()`` lists them.

Docstrings cite the four papers by first author and year (equation numbers are the papers'):

* Hossain, Betts & Paplinski 2021, *Dual Focal Loss to address class imbalance in semantic segmentation*
  (Neurocomputing) — "Hossain et al. 2021";
* Tian, Mithun, Seymour, Chiu & Kira 2022, *Striking the Right Balance: Recall Loss for Semantic
  Segmentation* (ICRA) — "Tian et al. 2022";
* Liu, Dolz, Galdran, Kobbi & Ben Ayed 2021, *The Hidden Label-marginal Biases of Segmentation Losses*
  (arXiv:2104.08717) — "Liu et al. 2021";
* Ma 2020, *Segmentation Loss Odyssey* (arXiv:2005.13449) — "Ma 2020".
"""

# importing the loss modules registers them
from segbalance.monai_losses import (  # noqa: F401
    boundary,
    compound,
    cross_entropy,
    dice,
    distance_penalized_ce,
    focal,
    hausdorff,
    iou,
    lovasz,
    marginal,
    recall,
    sensitivity_specificity,
    tversky,
)
from segbalance.monai_losses.compiling import compile_loss, is_compiled
from segbalance.monai_losses.registry import get, loss_class, names, register

__all__ = ["get", "names", "register", "loss_class", "compile_loss", "is_compiled"]
