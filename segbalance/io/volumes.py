"""Read and write 3D volumes with their geometry: NIfTI, MHD/MHA (+RAW), NRRD and DICOM series.

A :class:`~segbalance.io.volume.Volume` (its own module) holds the voxel array in SimpleITK's
numpy order ``(z, y, x)``, the ``spacing`` in that same array order ``(z, y, x)`` (mm), and ``origin`` /
``direction`` in ITK's physical LPS convention: ``origin`` is ``(x, y, z)`` and ``direction`` the
row-major 3x3 matrix whose *columns* are the physical directions of the ITK axes ``i, j, k`` (= array
axes ``x, y, z``). Intensities are in real units (DICOM rescale slope/intercept applied, so CT is in HU).

Writing is atomic (:func:`segbalance.atomic.atomic_write`): the file is written under a temporary name in
the destination folder and moved into place with :func:`os.replace`, so an interrupted run never leaves a
half-written volume behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segbalance.extras import require

require("SimpleITK", "nibabel", needed_for="reading and writing volumes (NIfTI, NRRD, MHA/MHD)")

import SimpleITK as sitk  # noqa: E402

from segbalance.atomic import atomic_write  # noqa: E402
from segbalance.io.volume import Volume  # noqa: E402

__all__ = [
    "read_volume",
    "write_volume",
    "case_id",
    "volume_format",
    "source_files",
    "image_dimension",
    "VOLUME_EXTENSIONS",
    "WRITABLE_EXTENSIONS",
]

# longest first so ".nii.gz" wins over ".gz"
VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".mhd", ".mha", ".nrrd", ".nhdr", ".dcm")
WRITABLE_EXTENSIONS = (".nii.gz", ".nii", ".mhd", ".mha", ".nrrd")


def volume_format(path: str | os.PathLike) -> str:
    """The format extension of ``path`` (``".nii.gz"``, ``".mhd"``, ...; ``"dicom"`` for a folder)."""
    p = Path(path)
    if p.is_dir():
        return "dicom"
    name = p.name.lower()
    for ext in VOLUME_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return p.suffix.lower()


def case_id(path: str | os.PathLike) -> str:
    """File name without its format extension (``case_01.nii.gz`` -> ``case_01``); folder name for DICOM."""
    p = Path(path)
    fmt = volume_format(p)
    if fmt == "dicom" or not p.name.lower().endswith(fmt):
        return p.name
    return p.name[: len(p.name) - len(fmt)]


def _header_fields(path: Path, sep: str) -> dict[str, str]:
    """``key <sep> value`` lines of a text header (MHD ``=``, detached NRRD ``:``)."""
    header: dict[str, str] = {}
    with open(path, "rb") as f:
        text = f.read(1 << 16).decode("latin-1")
    for line in text.splitlines():
        if sep in line:
            key, value = line.split(sep, 1)
            header[key.strip().lower() if sep == ":" else key.strip()] = value.strip()
    return header


def source_files(path: str | os.PathLike) -> list[Path]:
    """Every file that makes up the volume at ``path``: the file itself, an MHD's or detached NRRD's data
    file, or each file of a DICOM folder (sorted). What a converter fingerprints to notice a changed case."""
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file())
    out = [p]
    fmt = volume_format(p)
    if fmt in (".mhd", ".nhdr") and p.is_file():
        header = _header_fields(p, "=" if fmt == ".mhd" else ":")
        key = "ElementDataFile" if fmt == ".mhd" else "data file"
        data = header.get(key, header.get("datafile"))
        if data and data != "LOCAL" and not data.startswith("LIST") and "%" not in data:
            out.append(p.parent / data)
    return out


def image_dimension(path: str | os.PathLike) -> int | None:
    """Number of image dimensions from the header alone (``None`` for a DICOM folder or when the header
    cannot be read: the full read reports the problem)."""
    p = Path(path)
    if p.is_dir():
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return reader.GetDimension()


def _check_mhd_data_file(path: Path) -> None:
    """An MHD header must point at an existing data file of the right size (ITK's error is vague)."""
    header = _header_fields(path, "=")
    data = header.get("ElementDataFile")
    if data is None:
        raise ValueError(f"{path}: MHD header has no ElementDataFile entry")
    if data == "LOCAL" or data.startswith("LIST") or "%" in data:
        return
    data_path = path.parent / data
    if not data_path.exists():
        raise FileNotFoundError(f"{path}: its data file {data_path} (ElementDataFile) does not exist")
    compressed = header.get("CompressedData", "False").lower() == "true"
    if compressed:
        return
    sizes = {"MET_UCHAR": 1, "MET_CHAR": 1, "MET_USHORT": 2, "MET_SHORT": 2, "MET_UINT": 4, "MET_INT": 4,
             "MET_FLOAT": 4, "MET_DOUBLE": 8, "MET_ULONG": 8, "MET_LONG": 8, "MET_ULONG_LONG": 8,
             "MET_LONG_LONG": 8}
    try:
        dims = [int(v) for v in header["DimSize"].split()]
        nbytes = sizes[header["ElementType"]] * int(header.get("ElementNumberOfChannels", "1"))
    except (KeyError, ValueError):
        return  # let ITK report it
    expected = int(np.prod(dims)) * nbytes
    actual = data_path.stat().st_size
    if actual < expected:
        raise ValueError(
            f"{data_path}: truncated data file, {actual} bytes but header {path.name} needs {expected} "
            f"(DimSize {dims}, {header['ElementType']})"
        )


def _gzip_payload_size(path: Path, expected: int) -> int:
    """Uncompressed size of a gzip file: the ISIZE trailer when it matches ``expected`` (mod 2**32), else
    an exact count by streaming (multi-member files, or a truncated file whose last bytes are not a
    trailer)."""
    import gzip
    import zlib

    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        isize = int.from_bytes(f.read(4), "little")
    if isize == expected % 2**32:
        return expected
    total = 0
    try:
        with gzip.open(path, "rb") as g:
            while chunk := g.read(1 << 22):
                total += len(chunk)
    except (EOFError, OSError, zlib.error):
        pass  # truncated stream: report what could be decompressed
    return total


def _check_nifti_size(path: Path, fmt: str) -> None:
    """SimpleITK reads a truncated NIfTI without complaint (the missing voxels come back as zeros), so
    compare the data size the header promises with what the file holds."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
        header, offset = image.header, int(image.dataobj.offset)
    except Exception as exc:
        raise ValueError(f"{path}: unreadable NIfTI header ({exc})") from None
    n_voxels = int(np.prod(header.get_data_shape(), dtype=np.int64))
    expected = offset + n_voxels * header.get_data_dtype().itemsize
    actual = path.stat().st_size if fmt == ".nii" else _gzip_payload_size(path, expected)
    if actual < expected:
        raise ValueError(f"{path}: unreadable or truncated {fmt} file: holds {actual} bytes of image data "
                         f"and header, the header needs {expected}")


def read_volume(
    path: str | os.PathLike,
    series_uid: str | None = None,
    *,
    check_spacing_tolerance: float = 0.01,
) -> Volume:
    """Read a volume with its geometry.

    Args:
        path: a ``.nii``/``.nii.gz``, ``.mhd``/``.mha``, ``.nrrd``/``.nhdr`` or ``.dcm`` file, or a folder
            holding one (or several) DICOM series.
        series_uid: for a DICOM folder with several series, the ``SeriesInstanceUID`` to read.
        check_spacing_tolerance: relative tolerance on slice-spacing uniformity of a DICOM series.

    Raises:
        FileNotFoundError: ``path`` (or an MHD data file) does not exist.
        ValueError: unreadable or truncated file, unsupported format, ambiguous or gapped DICOM series.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    fmt = volume_format(p)
    if fmt == "dicom":
        from segbalance.io.dicom import read_dicom_series

        return read_dicom_series(p, series_uid=series_uid, spacing_tolerance=check_spacing_tolerance)
    if fmt == ".dcm":
        from segbalance.io.dicom import read_dicom_file

        return read_dicom_file(p)
    if fmt not in VOLUME_EXTENSIONS:
        raise ValueError(f"{p}: unsupported volume format {fmt!r}; expected one of {VOLUME_EXTENSIONS} "
                         "or a DICOM folder")
    if p.stat().st_size == 0:
        raise ValueError(f"{p}: empty file")
    if fmt == ".mhd":
        _check_mhd_data_file(p)
    elif fmt in (".nii", ".nii.gz"):
        _check_nifti_size(p, fmt)
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()
        detail = next((m for m in reversed(msg) if m.strip()), "")
        raise ValueError(f"{p}: unreadable or truncated {fmt} file ({detail.strip()})") from None
    return Volume.from_sitk(image, p)


def write_volume(volume: Volume, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write ``volume`` to ``path`` atomically (temp file in the same folder, then :func:`os.replace`).

    The format follows the extension (:data:`WRITABLE_EXTENSIONS`). ``.mhd`` writes the header and a
    ``.raw`` (``.zraw`` when compressed) data file next to it. Returns the written path.
    """
    p = Path(path)
    fmt = volume_format(p) if not p.is_dir() else "dicom"
    if fmt not in WRITABLE_EXTENSIONS:
        raise ValueError(f"{p}: cannot write format {fmt!r}; expected one of {WRITABLE_EXTENSIONS}")
    p.parent.mkdir(parents=True, exist_ok=True)
    image = volume.to_sitk()
    use_compression = compress and fmt in (".nii.gz", ".mha", ".mhd", ".nrrd")
    with atomic_write(p) as tmp:
        sitk.WriteImage(image, str(tmp), use_compression)
    return p
