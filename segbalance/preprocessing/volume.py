"""Deprecated: moved to :mod:`segbalance.io.volume` (docs/design.md, "Layers"); this path re-exports it for
one release and warns once on import.
"""

import warnings

from segbalance.io.volume import (  # noqa: F401
    Volume,
)

__all__ = [
    "Volume",
]

warnings.warn(
    "segbalance.preprocessing.volume is deprecated; import from segbalance.io.volume instead",
    DeprecationWarning,
    stacklevel=2,
)
