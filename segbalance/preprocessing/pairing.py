"""Find image/label pairs in a source folder and check that they belong together.

Source layouts (``SRC``):

* ``SRC/images/<case>.<ext>`` and ``SRC/labels/<case>.<ext>``; a DICOM series is a sub-folder
  ``SRC/images/<case>/``. Several image channels of one case: ``<case>_0000.<ext>``, ``<case>_0001.<ext>``.
* nnU-Net-like ``SRC/imagesTr`` + ``SRC/labelsTr`` (``<case>_0000.<ext>`` images), and optionally
  ``SRC/imagesTs`` (images without labels).

The case id is the file name without its format extension (``.nii.gz``, ``.mhd``, ...) and without a
``_0000``-style channel suffix. Images without a label are test cases; a label without an image is an error.

A label may also be DICOM: ``labels/<case>.dcm`` (a DICOM-SEG or RTSTRUCT file) or ``labels/<case>/`` (a
folder holding exactly one); it is rasterized on the image's grid with a label map naming its
segments/ROIs (:mod:`segbalance.io.dicom_labels`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segbalance.io.volume import Volume
from segbalance.io.volumes import VOLUME_EXTENSIONS, case_id
from segbalance.labels import present_labels

__all__ = ["Case", "find_cases", "check_geometry", "check_label", "CaseError", "read_label", "load_case"]

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


class CaseError(ValueError):
    """A problem with one case; the message names the file and what is wrong."""


@dataclass
class Case:
    case_id: str
    images: list[Path]  # one per channel, in channel order
    label: Path | None = None
    split: str = "train"  # "train" (has a label) or "test"
    extra: dict = field(default_factory=dict)


def _volumes_in(folder: Path) -> list[Path]:
    out = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            out.append(entry)  # DICOM series
        elif entry.name.lower().endswith(VOLUME_EXTENSIONS):
            out.append(entry)
    return out


def _split_channel(stem: str) -> tuple[str, int | None]:
    m = _CHANNEL.match(stem)
    return (m["case"], int(m["channel"])) if m else (stem, None)


def _group_images(paths: list[Path]) -> dict[str, list[Path]]:
    groups: dict[str, dict[int, Path]] = {}
    for path in paths:
        cid, channel = _split_channel(case_id(path))
        chans = groups.setdefault(cid, {})
        key = 0 if channel is None else channel
        if key in chans:
            raise CaseError(f"{path}: case {cid!r} channel {key} also given by {chans[key]}")
        chans[key] = path
    out = {}
    for cid, chans in groups.items():
        keys = sorted(chans)
        if keys != list(range(len(keys))):
            raise CaseError(
                f"{chans[keys[0]].parent}: case {cid!r} has channels {keys}, expected 0..{len(keys) - 1}"
            )
        out[cid] = [chans[k] for k in keys]
    return out


def find_cases(src: str | os.PathLike) -> list[Case]:
    """Image/label pairs under ``src`` (see the module docstring for the layouts)."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: source folder does not exist")
    layouts = [("images", "labels", None), ("imagesTr", "labelsTr", "imagesTs")]
    found = [layout for layout in layouts if (src / layout[0]).is_dir()]
    if not found:
        raise ValueError(f"{src}: expected an images/ + labels/ or imagesTr/ + labelsTr/ sub-folder")
    img_dir, lab_dir, test_dir = found[0]
    images = _group_images(_volumes_in(src / img_dir))
    labels: dict[str, Path] = {}
    if (src / lab_dir).is_dir():
        for path in _volumes_in(src / lab_dir):
            cid, _ = _split_channel(case_id(path)) if case_id(path) not in images else (case_id(path), None)
            labels[cid] = path
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise CaseError(f"{src / lab_dir}: labels without an image: {', '.join(orphans)}")
    cases = [Case(cid, chans, labels.get(cid), "train" if cid in labels else "test")
             for cid, chans in sorted(images.items())]
    if test_dir and (src / test_dir).is_dir():
        for cid, chans in sorted(_group_images(_volumes_in(src / test_dir)).items()):
            cases.append(Case(cid, chans, None, "test"))
    return cases


def check_geometry(reference: Volume, other: Volume, *, atol_mm: float = 1e-3, rtol: float = 1e-4,
                   atol_direction: float = 1e-4) -> None:
    """Raise :class:`CaseError` naming ``other.path`` if its grid differs from ``reference``'s.

    Spacing is compared with relative tolerance ``rtol``, origin within ``atol_mm`` plus ``rtol`` of
    its magnitude, direction cosines within ``atol_direction``.
    """
    name = other.path or "volume"
    ref = reference.path.name if reference.path else "reference"
    if other.shape != reference.shape:
        raise CaseError(f"{name}: shape {other.shape} differs from {ref}'s {reference.shape}")
    if not np.allclose(other.spacing, reference.spacing, rtol=rtol, atol=0):
        raise CaseError(f"{name}: spacing {tuple(round(s, 5) for s in other.spacing)} (z, y, x) differs from "
                        f"{ref}'s {tuple(round(s, 5) for s in reference.spacing)}")
    if not np.allclose(other.origin, reference.origin, rtol=rtol, atol=atol_mm):
        raise CaseError(f"{name}: origin {tuple(round(s, 4) for s in other.origin)} differs from "
                        f"{ref}'s {tuple(round(s, 4) for s in reference.origin)}")
    if not np.allclose(other.direction, reference.direction, atol=atol_direction, rtol=0):
        raise CaseError(f"{name}: direction {tuple(round(s, 5) for s in other.direction)} differs from "
                        f"{ref}'s {tuple(round(s, 5) for s in reference.direction)}")


def check_label(label: Volume, known: set[int] | None = None) -> np.ndarray:
    """Return the label array as integers; raise :class:`CaseError` if it is not integer-valued or has
    values outside ``known``."""
    name = label.path or "label"
    arr = label.array
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise CaseError(f"{name}: label has NaN/Inf values")
        frac = arr != np.round(arr)
        if frac.any():
            example = float(arr[frac].flat[0])
            raise CaseError(f"{name}: label has non-integer values (e.g. {example}); expected class indices")
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer) and arr.dtype != bool:
        raise CaseError(f"{name}: label dtype {arr.dtype} is not an integer type")
    values = set(present_labels(arr).tolist())
    if (arr < 0).any():
        raise CaseError(f"{name}: label has negative values {sorted(v for v in values if v < 0)}")
    if known is not None:
        unknown = sorted(values - set(known))
        if unknown:
            raise CaseError(f"{name}: label values {unknown} are not among the known labels {sorted(known)}")
    return arr


def read_label(path: str | os.PathLike, reference: Volume,
               label_map: dict[int, str] | str | None = None) -> Volume:
    """The label of ``reference`` (its image) at ``path``, checked to lie on the image's grid.

    ``path`` is a volume file (NIfTI, MHD, NRRD, ...), a DICOM label series, or a DICOM-SEG/RTSTRUCT file
    (or a folder holding one), which is rasterized on ``reference``'s grid with ``label_map``
    (``{value: segment/ROI name}``, see :func:`~segbalance.io.dicom_labels.read_dicom_label`).
    """
    from segbalance.io.dicom_labels import find_dicom_label, read_dicom_label
    from segbalance.io.volumes import read_volume

    try:
        found = find_dicom_label(path)
    except ValueError as exc:
        raise CaseError(str(exc)) from None
    if found is not None:
        try:
            return read_dicom_label(found[0], reference, label_map)
        except CaseError:
            raise
        except ValueError as exc:
            raise CaseError(str(exc)) from None
    label = read_volume(path)
    check_geometry(reference, label)
    return label


def load_case(case: Case, known_labels: set[int] | None = None,
              label_map: dict[int, str] | str | None = None) -> tuple[list[Volume], Volume | None]:
    """Read a case's channels and label and check them: same grid, integer label with known values.

    The returned label volume holds an integer array. A DICOM-SEG/RTSTRUCT label is rasterized with
    ``label_map`` (default: ``case.extra["label_map"]``). Errors name the offending file.
    """
    from segbalance.io.volumes import read_volume

    images = [read_volume(p) for p in case.images]
    for other in images[1:]:
        check_geometry(images[0], other)
    label = None
    if case.label is not None:
        label = read_label(case.label, images[0], label_map or case.extra.get("label_map"))
        label = label.with_array(check_label(label, known_labels))
    return images, label
