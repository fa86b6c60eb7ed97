"""The loss library: every loss of the four papers as a function plus an ``nn.Module`` in MONAI's conventions.

``get(name, **kwargs)`` returns a registered loss module, ``names()`` lists them. The classes exported under
MONAI's names (``DiceLoss``, ``DiceCELoss``, ``FocalLoss``, ``GeneralizedDiceLoss``, ``HausdorffDTLoss``,
``TverskyLoss``) are MONAI's classes to the letter; segbalance's own forms of those losses are registry
losses (``dice``, ``dice_ce``, ``focal``, ``gdl``, ``hd_dt``, ``tversky``).

Docstrings cite the four papers by first author and year (equation numbers are the papers'):

* Hossain, Betts & Paplinski 2021, *Dual Focal Loss to address class imbalance in semantic segmentation*
  (Neurocomputing) — "Hossain et al. 2021";
* Tian, Mithun, Seymour, Chiu & Kira 2022, *Striking the Right Balance: Recall Loss for Semantic
  Segmentation* (ICRA) — "Tian et al. 2022";
* Liu, Dolz, Galdran, Kobbi & Ben Ayed 2021, *The Hidden Label-marginal Biases of Segmentation Losses*
  (arXiv:2104.08717) — "Liu et al. 2021";
* Ma 2020, *Segmentation Loss Odyssey* (arXiv:2005.13449) — "Ma 2020".
"""

import importlib as _importlib
import pkgutil as _pkgutil

#: modules of this package that hold no loss (input handling, helpers); every other module is imported
#: here, which registers its losses: a new loss module needs no line in this file
_HELPERS = {"arguments", "base", "compiling", "conventions", "distance", "distance_inputs", "distributed",
            "inputs", "instance_maps", "monai_common", "registry", "schedules"}
for _module in sorted(m.name for m in _pkgutil.iter_modules(__path__)):
    if _module not in _HELPERS and not _module.startswith("_"):
        _importlib.import_module(f"{__name__}.{_module}")

from segbalance.monai_losses.compiling import compile_loss, is_compiled
from segbalance.monai_losses.monai_dice import DiceCELoss, DiceLoss, GeneralizedDiceLoss
from segbalance.monai_losses.monai_focal import FocalLoss
from segbalance.monai_losses.monai_hausdorff import HausdorffDTLoss
from segbalance.monai_losses.monai_tversky import TverskyLoss
from segbalance.monai_losses.registry import get, loss_class, names, register

#: the classes under MONAI's names: MONAI's classes to the letter (docs/losses.md, "MONAI-named classes");
#: segbalance's own forms are the registry losses
MONAI_NAMED = ["DiceLoss", "DiceCELoss", "FocalLoss", "GeneralizedDiceLoss", "HausdorffDTLoss", "TverskyLoss"]

__all__ = [
    "get", "names", "register", "loss_class", "compile_loss", "is_compiled", "MONAI_NAMED",
    "DiceLoss", "DiceCELoss", "FocalLoss", "GeneralizedDiceLoss", "HausdorffDTLoss", "TverskyLoss",
]
