"""Deprecated: moved to :mod:`segbalance.io.dicom_labels`, :mod:`segbalance.io.dicom_common`,
:mod:`segbalance.io.rtstruct` (docs/design.md, "Layers"); this path re-exports it for one release and
warns once on import.
"""

import warnings

from segbalance.io.dicom_common import (  # noqa: F401
    COPIED_TAGS,
    RTSTRUCT_SOP_CLASS,
    SEG_SOP_CLASS,
    parse_name_map,
)
from segbalance.io.dicom_labels import (  # noqa: F401
    dicom_label_kind,
    find_dicom_label,
    image_series_uids,
    read_dicom_label,
    read_seg,
)
from segbalance.io.rtstruct import (  # noqa: F401
    even_odd_fill,
    rasterize_rtstruct,
    write_rtstruct,
)

__all__ = [
    "dicom_label_kind", "find_dicom_label", "image_series_uids", "read_dicom_label", "read_seg",
    "SEG_SOP_CLASS", "RTSTRUCT_SOP_CLASS", "COPIED_TAGS", "parse_name_map", "rasterize_rtstruct",
    "even_odd_fill", "write_rtstruct",
]

warnings.warn(
    "segbalance.preprocessing.dicom_labels is deprecated; import from segbalance.io.dicom_labels instead",
    DeprecationWarning,
    stacklevel=2,
)
