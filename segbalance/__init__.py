"""segbalance: class-imbalance segmentation losses for 3D CT/MRI with MONAI and nnU-Net v2."""

__version__ = "0.1.0"
