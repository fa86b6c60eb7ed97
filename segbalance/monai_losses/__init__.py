"""The loss library: every loss of the four papers as a function plus an ``nn.Module`` in MONAI's conventions.

``get(name, **kwargs)`` returns a registered loss module, ``names()`` lists them.
"""

from segbalance.monai_losses import cross_entropy  # noqa: F401  (registers losses)
from segbalance.monai_losses.registry import get, loss_class, names, register

__all__ = ["get", "names", "register", "loss_class"]
