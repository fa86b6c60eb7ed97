"""Deprecated: moved to :mod:`segbalance.io.volumes` (docs/design.md, "Layers"); this path re-exports it for
one release and warns once on import.
"""

import warnings

from segbalance.io.volumes import (  # noqa: F401
    VOLUME_EXTENSIONS,
    WRITABLE_EXTENSIONS,
    case_id,
    image_dimension,
    read_volume,
    source_files,
    volume_format,
    write_volume,
)

__all__ = [
    "read_volume", "write_volume", "case_id", "volume_format", "source_files", "image_dimension",
    "VOLUME_EXTENSIONS", "WRITABLE_EXTENSIONS",
]

warnings.warn(
    "segbalance.preprocessing.io is deprecated; import from segbalance.io.volumes instead",
    DeprecationWarning,
    stacklevel=2,
)
