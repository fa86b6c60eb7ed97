"""Re-exports every segbalance trainer for nnU-Net's ``nnUNet_extTrainer`` lookup.

nnU-Net adds this folder to ``sys.path``, imports this module by its bare (unique) name, takes the class
and drops the module again; the classes themselves live in ``segbalance.trainers.generated`` (generated
from the table in ``segbalance.trainers.table`` and the losses' ``register(…, trainer=…)``) and pickle
from there.
"""

from segbalance.trainers.generated import *  # noqa: F401,F403
