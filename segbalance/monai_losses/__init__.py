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

import importlib as _importlib
import pkgutil as _pkgutil

#: modules of this package that hold no loss (input handling, helpers); every other module is imported
#: here, which registers its losses: a new loss module needs no line in this file
_HELPERS = {"base", "compiling", "conventions", "distance", "distance_inputs", "distributed", "inputs",
            "registry", "schedules"}
for _module in sorted(m.name for m in _pkgutil.iter_modules(__path__)):
    if _module not in _HELPERS and not _module.startswith("_"):
        _importlib.import_module(f"{__name__}.{_module}")

from segbalance.monai_losses.compiling import compile_loss, is_compiled
from segbalance.monai_losses.registry import get, loss_class, names, register

__all__ = ["get", "names", "register", "loss_class", "compile_loss", "is_compiled"]
