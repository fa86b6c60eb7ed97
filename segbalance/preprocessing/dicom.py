"""Deprecated: moved to :mod:`segbalance.io.dicom` (docs/design.md, "Layers"); this path re-exports it for
one release and warns once on import.
"""

import warnings

from segbalance.io.dicom import (  # noqa: F401
    SliceHeader,
    list_series,
    read_dicom_file,
    read_dicom_series,
    read_series_headers,
    write_dicom_series,
)

__all__ = [
    "SliceHeader", "list_series", "read_dicom_series", "read_dicom_file", "write_dicom_series",
    "read_series_headers",
]

warnings.warn(
    "segbalance.preprocessing.dicom is deprecated; import from segbalance.io.dicom instead",
    DeprecationWarning,
    stacklevel=2,
)
