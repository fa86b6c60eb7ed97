"""segbalance: class-imbalance segmentation losses for 3D CT/MRI with MONAI and nnU-Net v2.

The core, :mod:`segbalance.monai_losses`, needs only torch, numpy, scipy and edt. The other parts need
an extra (``pip install "segbalance[all]"`` for everything):

=============================  ==========================================================
``segbalance.monai_losses``    core: every loss as a function + ``nn.Module``
``segbalance.nnunet_losses``,  ``[nnunet]``: nnU-Net v2 adapters and trainers
``segbalance.trainers``
``segbalance.training``,       ``[monai]``: MONAI training, metrics with MONAI's semantics
``segbalance.evaluation``
``segbalance.preprocessing``   ``[io]``: MHD/NRRD/NIfTI/DICOM readers, converters
=============================  ==========================================================
"""

__version__ = "0.2.0"
