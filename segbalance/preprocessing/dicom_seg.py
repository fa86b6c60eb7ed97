"""Deprecated: moved to :mod:`segbalance.io.dicom_seg` (docs/design.md, "Layers"); this path re-exports it
for one release and warns once on import. ``export_seg_folder`` and ``register`` (the ``export-seg``
command) moved to :mod:`segbalance.training.export_seg`; they are not in ``__all__`` but still resolve
here.
"""

import warnings

from segbalance.io.dicom_seg import (  # noqa: F401
    KEPT_SOURCE_TAGS,
    write_dicom_seg,
)

__all__ = [
    "write_dicom_seg", "KEPT_SOURCE_TAGS",
]

warnings.warn(
    "segbalance.preprocessing.dicom_seg is deprecated; import from segbalance.io.dicom_seg instead",
    DeprecationWarning,
    stacklevel=2,
)

# commands above the io layer: imported on first use, never at import
_LAZY = {"export_seg_folder": "segbalance.training.export_seg", "register": "segbalance.training.export_seg"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
