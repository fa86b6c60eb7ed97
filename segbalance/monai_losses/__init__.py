"""The loss library: every loss of the four papers as a function plus an ``nn.Module`` in MONAI's conventions.

``get(name, **kwargs)`` returns a registered loss module, ``names()`` lists them.
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
from segbalance.monai_losses.registry import get, loss_class, names, register

__all__ = ["get", "names", "register", "loss_class"]
