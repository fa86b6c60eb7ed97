"""Pieces every DICOM label reader and writer shares: the SOP classes, label maps (``1=GTV,2=Lung_L``)
and their matching to segment / ROI names, the index mapping of an image grid, painting masks into one
label volume, the attributes copied from a source series, display colours, and the check that a DICOM
file is complete (:func:`check_dicom_complete`: a truncated or damaged file is reported as such, naming
the file, never read as an empty one).
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

import numpy as np

from segbalance.io.volume import Volume

__all__ = ["SEG_SOP_CLASS", "RTSTRUCT_SOP_CLASS", "COPIED_TAGS", "parse_name_map", "check_dicom_complete",
           "DamagedFileError"]

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
KINDS = {SEG_SOP_CLASS: "seg", RTSTRUCT_SOP_CLASS: "rtstruct"}
WHAT = {"seg": ("segment", "DICOM-SEG"), "rtstruct": ("ROI", "RTSTRUCT")}

def parse_name_map(text: str | dict | None) -> dict[int, str] | None:
    """``"1=GTV,2=Lung_L"`` -> ``{1: "GTV", 2: "Lung_L"}`` (a dict passes through; ``0=`` is allowed)."""
    if text is None or isinstance(text, dict):
        return None if text is None else {int(k): str(v) for k, v in text.items()}
    out: dict[int, str] = {}
    for item in (i.strip() for i in str(text).split(",")):
        if not item:
            continue
        value, sep, name = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--label-map item {item!r} must look like VALUE=NAME (e.g. 1=GTV,2=Lung_L)")
        try:
            v = int(value)
        except ValueError:
            raise ValueError(f"--label-map value {value!r} in {item!r} is not an integer") from None
        if v < 0 or v in out:
            raise ValueError(f"--label-map {text!r}: negative or duplicate value in {item!r}")
        out[v] = name.strip()
    if not out:
        raise ValueError(f"--label-map {text!r} is empty; expected VALUE=NAME,... (e.g. 1=GTV,2=Lung_L)")
    return out


def _norm(name: str) -> str:
    return " ".join(str(name).split()).casefold()



def match_names(names: dict[int, str], label_map: dict[int, str], path: Path, kind: str) -> dict[int, int]:
    """``{label value: number in the file}`` for every non-zero entry of ``label_map``."""
    what, where = WHAT[kind]
    by_name: dict[str, list[int]] = {}
    for number, name in names.items():
        by_name.setdefault(_norm(name), []).append(number)
    out = {}
    found = ", ".join(repr(n) for n in names.values()) or "none"
    for value, name in sorted(label_map.items()):
        if value == 0:
            continue
        numbers = by_name.get(_norm(name), [])
        if not numbers:
            raise ValueError(f"{path}: no {what} named {name!r} (label {value}) in this {where}; "
                             f"its {what}s are: {found}")
        if len(numbers) > 1:  # only an error for a structure the map asks for
            raise ValueError(f"{path}: {len(numbers)} {what}s are named {name!r} (numbers "
                             f"{', '.join(map(str, numbers))}); the label map cannot tell them apart")
        out[value] = numbers[0]
    if not out:
        raise ValueError(f"{path}: the label map {label_map} names no structure (only background); "
                         f"the {where}'s {what}s are: {found}")
    return out


def index_matrix(reference: Volume) -> tuple[np.ndarray, np.ndarray]:
    """``(A, o)`` such that the continuous voxel index ``(i, j, k) = A @ (p - o)`` (x, y, z axes)."""
    sz, sy, sx = reference.spacing
    m = reference.direction_matrix @ np.diag([sx, sy, sz])
    return np.linalg.inv(m), np.asarray(reference.origin, dtype=np.float64)


def paint(masks: dict[int, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Label volume from ``{value: mask}``; painted in ascending value, so the higher value wins overlaps."""
    top = max(masks, default=0)
    out = np.zeros(shape, dtype=np.uint8 if top <= 255 else np.uint16)
    for value in sorted(masks):
        out[masks[value]] = value
    return out



# copied from the image series into what segbalance writes (patient and study identification only)
COPIED_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
               "StudyID")

# RGB display colours (RTSTRUCT ROIDisplayColor; DICOM-SEG converts them to CIELab)
COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]


# ------------------------------------------------------------------------------------ complete files


class DamagedFileError(ValueError):
    """A file that is truncated or whose structure is broken; the message names the file."""


_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_IMPLICIT_LE, _EXPLICIT_BE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"
_DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")


class _Truncated(Exception):
    pass


class _Walker:
    """Walks the element structure of a DICOM byte buffer without decoding values: every element's value
    must fit in the file and every undefined-length sequence and item must be closed by its delimiter."""

    def __init__(self, buf, implicit: bool, little: bool):
        self.buf, self.size, self.implicit = buf, len(buf), implicit
        self.u16, self.u32 = ("<H", "<I") if little else (">H", ">I")

    def _need(self, pos: int, n: int, what: str) -> None:
        if pos + n > self.size:
            raise _Truncated(f"ends at byte {self.size} inside {what}")

    def _tag(self, pos: int) -> int:
        self._need(pos, 8, "an element header")
        group = struct.unpack_from(self.u16, self.buf, pos)[0]
        element = struct.unpack_from(self.u16, self.buf, pos + 2)[0]
        return group << 16 | element

    def elements(self, pos: int, end: int | None, implicit: bool, closing: int | None = None) -> int:
        limit = self.size if end is None else end
        while pos < limit:
            tag = self._tag(pos)
            name = f"element ({tag >> 16:04X},{tag & 0xFFFF:04X})"
            if tag in (_ITEM_END, _SEQ_END):
                if tag != closing:
                    raise _Truncated(f"has a stray delimiter {name} at byte {pos}")
                return pos + 8
            if implicit or tag >> 16 == 0xFFFE:
                length, vr, pos = struct.unpack_from(self.u32, self.buf, pos + 4)[0], None, pos + 8
            else:
                vr = bytes(self.buf[pos + 4 : pos + 6])
                if vr in _LONG_VRS:
                    self._need(pos, 12, f"the header of {name}")
                    length, pos = struct.unpack_from(self.u32, self.buf, pos + 8)[0], pos + 12
                else:
                    length, pos = struct.unpack_from(self.u16, self.buf, pos + 6)[0], pos + 8
            if length == _UNDEFINED:
                # a sequence (or encapsulated pixel data); UN of undefined length is implicit VR inside
                pos = self.items(pos, implicit or vr == b"UN", name)
            else:
                self._need(pos, length, f"the value of {name} ({length} bytes from byte {pos})")
                pos += length
        if closing is not None:
            raise _Truncated(f"ends at byte {self.size} before the end of an item")
        return pos

    def items(self, pos: int, implicit: bool, name: str) -> int:
        while True:
            if pos + 8 > self.size:
                raise _Truncated(f"ends at byte {self.size} inside the sequence {name}")
            tag = self._tag(pos)
            length = struct.unpack_from(self.u32, self.buf, pos + 4)[0]
            pos += 8
            if tag == _SEQ_END:
                return pos
            if tag != _ITEM:
                raise _Truncated(f"has element ({tag >> 16:04X},{tag & 0xFFFF:04X}) where an item of "
                                 f"{name} should be, at byte {pos - 8}")
            if length == _UNDEFINED:
                pos = self.elements(pos, None, implicit, closing=_ITEM_END)
            else:
                self._need(pos, length, f"an item of {name}")
                pos += length


def _dicom_problem(path: Path) -> str | None:
    """Why the DICOM file at ``path`` is incomplete (``None``: complete, or not a Part 10 file)."""
    size = path.stat().st_size
    if size < 132:
        return None
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[128:132] != b"DICM":
            return None
        walker = _Walker(buf, implicit=False, little=True)
        pos, syntax = 132, None
        try:
            while pos + 8 <= size and struct.unpack_from("<H", buf, pos)[0] == 0x0002:  # file meta
                tag = walker._tag(pos)
                vr = bytes(buf[pos + 4 : pos + 6])
                if vr in _LONG_VRS:
                    walker._need(pos, 12, "the file meta information")
                    length, start = struct.unpack_from("<I", buf, pos + 8)[0], pos + 12
                else:
                    length, start = struct.unpack_from("<H", buf, pos + 6)[0], pos + 8
                walker._need(start, length, "the file meta information")
                if tag == 0x00020010:
                    syntax = bytes(buf[start : start + length]).rstrip(b"\0 ").decode("ascii", "replace")
                pos = start + length
            if syntax in _DEFLATED:
                return None  # compressed data set: the reader reports what it cannot inflate
            implicit = syntax == _IMPLICIT_LE
            body = _Walker(buf, implicit=implicit, little=syntax != _EXPLICIT_BE)
            body.elements(pos, None, implicit)
        except _Truncated as exc:
            return str(exc)
        except struct.error:
            return f"ends at byte {size} inside an element header"
    return None


def check_dicom_complete(path: str | os.PathLike, what: str = "DICOM file", *, dataset=None,
                         required: tuple[str, ...] = ()) -> None:
    """Raise :class:`DamagedFileError` naming ``path`` when the DICOM file is truncated or broken: an element
    whose value runs past the end of the file, a sequence or item never closed, a stray delimiter, or (with
    ``dataset``, the file as read) one of the ``required`` top-level attributes (keywords) missing.

    pydicom reads such files without complaint and returns what it found before the cut, so a truncated
    RTSTRUCT would otherwise look like one without ROIs. Cost: one pass over the element headers (values
    are skipped, the file is memory-mapped)."""
    path = Path(path)
    problem = _dicom_problem(path)
    if problem is None and dataset is not None:
        missing = [k for k in required if k not in dataset]
        if missing:
            problem = f"lacks {', '.join(missing)}, which every {what} has"
    if problem is not None:
        raise DamagedFileError(f"{path}: damaged or truncated {what} ({path.stat().st_size} bytes): it "
                               f"{problem}; the file is incomplete, not empty: copy it again from its source")
