"""Preprocessing: find and check image/label pairs; convert to nnU-Net v2 raw datasets, 2D slices or 3D
patches; MONAI transforms for ``Compose``. Files are read and written through :mod:`segbalance.io`
(``Volume``, ``read_volume``, ``write_volume`` and ``case_id`` are re-exported here).

Heavy modules (MONAI transforms, converters) are imported on first use.
"""

from segbalance.extras import require

require("SimpleITK", "nibabel", "pydicom", needed_for="segbalance.preprocessing (volume I/O)")

from segbalance.io.volume import Volume
from segbalance.io.volumes import case_id, read_volume, write_volume

__all__ = [
    "Volume", "read_volume", "write_volume", "case_id",
    "convert_to_nnunet", "convert_to_slices", "convert_to_patches", "find_cases", "load_case",
    "LoadVolumed", "VolumeToSlicesd", "VolumeToPatchesd", "LabelProportionsd", "SignedDistanceMapd",
    "InstanceMapsd", "VolumeReader",
]

_LAZY = {
    "convert_to_nnunet": "nnunet", "convert_to_slices": "slices", "convert_to_patches": "patches",
    "find_cases": "pairing", "load_case": "pairing",
    "LoadVolumed": "transforms", "VolumeToSlicesd": "transforms", "VolumeToPatchesd": "transforms",
    "LabelProportionsd": "transforms", "SignedDistanceMapd": "transforms", "VolumeReader": "transforms",
    "InstanceMapsd": "transforms",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"segbalance.preprocessing.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'segbalance.preprocessing' has no attribute {name!r}")
