"""Re-exports every segbalance trainer for nnU-Net's ``nnUNet_extTrainer`` lookup.

nnU-Net adds this folder to ``sys.path``, imports this module by its bare (unique) name, takes the class
and drops the module again; the classes themselves live in ``segbalance.trainers`` and pickle from there.
"""

from segbalance.trainers.base import SegBalanceTrainer  # noqa: F401
from segbalance.trainers.boundary import nnUNetTrainerBoundary, nnUNetTrainerHDDT  # noqa: F401
from segbalance.trainers.compound import nnUNetTrainerDFLDice  # noqa: F401
from segbalance.trainers.configurable import nnUNetTrainerSegBalance  # noqa: F401
from segbalance.trainers.distribution import (  # noqa: F401
    nnUNetTrainerDCE,
    nnUNetTrainerDFL,
    nnUNetTrainerFocal,
    nnUNetTrainerRecall,
)
from segbalance.trainers.marginal import (  # noqa: F401
    nnUNetTrainerCEKL,
    nnUNetTrainerCEL1,
    nnUNetTrainerDiceBiasCE,
)
from segbalance.trainers.region import (  # noqa: F401
    nnUNetTrainerCombo,
    nnUNetTrainerExpLog,
    nnUNetTrainerFocalTversky,
    nnUNetTrainerGDL,
    nnUNetTrainerTversky,
)
from segbalance.trainers.short import *  # noqa: F401,F403
