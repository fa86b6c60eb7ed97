"""Output names of a case read from a single DICOM series (``segbalance predict SERIES/ OUT``).

A folder of cases names each case after its file or sub-folder (``images/<case>/`` -> ``<case>``), so that
predictions pair with ``labels/<case>`` and ``segbalance evaluate``. A DICOM series given on its own has no
such name (its folder is often ``series``, ``DICOM`` or ``1``), so it is named from its headers:

* ``<PatientID>_<StudyDate>_<SeriesDescription>``, each part that the series has, in that order
  (``P0042_20260312_T1_MPRAGE``);
* the ``SeriesInstanceUID`` when the series has no ``PatientID`` (an anonymised export);
* every character outside ``A-Z a-z 0-9 . _ -`` becomes ``_`` (runs collapsed), at most 120 characters.

Two inputs that would get one name, or an output that already exists and belongs to another source, are
told apart by :func:`unique_suffix` (the series' UID, a file's path digest): a case's file is never
overwritten by another case's.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

__all__ = ["case_output_name", "safe_name", "unique_suffix", "series_identity"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, limit: int = 120) -> str:
    """``text`` as a portable file name part (see the module docstring); ``""`` when nothing is left."""
    return _UNSAFE.sub("_", str(text).strip()).strip("._-")[:limit].rstrip("._-")


def series_identity(folder: str | os.PathLike) -> dict[str, str]:
    """``PatientID``, ``StudyDate``, ``SeriesDescription`` and ``SeriesInstanceUID`` of the first image slice
    under ``folder`` (empty strings where absent; all empty when no slice is readable)."""
    import pydicom

    keys = ("PatientID", "StudyDate", "SeriesDescription", "SeriesInstanceUID")
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=[*keys, "Rows"])
        except Exception:  # not DICOM or damaged: the series read reports it
            continue
        if "Rows" in ds:
            return {k: str(ds.get(k, "") or "").strip() for k in keys}
    return dict.fromkeys(keys, "")


def case_output_name(folder: str | os.PathLike) -> str:
    """The case name of the DICOM series in ``folder`` (the rule of the module docstring); the folder's own
    name when no slice can be read (the read then reports why)."""
    ident = series_identity(folder)
    if ident["PatientID"]:
        parts = [ident["PatientID"], ident["StudyDate"], ident["SeriesDescription"]]
        name = "_".join(p for p in (safe_name(x) for x in parts) if p)
    else:
        name = safe_name(ident["SeriesInstanceUID"])
    return name or safe_name(Path(folder).name) or "case"


def unique_suffix(path: str | os.PathLike) -> str:
    """What tells two inputs of one name apart: a DICOM series' ``SeriesInstanceUID``, else the first 8 hex
    digits of the SHA-1 of the input's absolute path."""
    p = Path(path)
    if p.is_dir():
        uid = safe_name(series_identity(p)["SeriesInstanceUID"])
        if uid:
            return uid
    return hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:8]
