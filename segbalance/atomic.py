"""Atomic file writes: the one place segbalance writes an output file.

A file is written under a temporary name in its final folder and moved into place with :func:`os.replace`,
so a reader (or a re-run after a crash or ``kill -9``) sees either the old file or the complete new one,
never a half-written one. Temporary names start with ``.`` and end with :data:`TEMP_SUFFIX`; a file or
folder named like that can only be left behind by a killed writer and :func:`remove_stale_temps` deletes it.

* :func:`atomic_write` — context manager giving a temporary *path* that ends like the final name (so
  SimpleITK, PIL, ``torch.save`` pick the right format) inside a private temporary folder; side files
  written next to it (an MHD's ``.raw``) are moved along, the main file last.
* :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_save_npz` — the common cases.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["TEMP_SUFFIX", "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_save_npz",
           "is_temp_name", "remove_stale_temps"]

#: every temporary file or folder segbalance creates ends with this (and starts with ``.``)
TEMP_SUFFIX = ".segbalance-tmp"

# fixed zip member timestamp: the same arrays give the same NPZ bytes on every run
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of our temporary names (``.<anything>.segbalance-tmp``)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success move it (and any side file written
    next to it) into ``path``'s folder, the main file last. On error nothing is moved and the temporary
    folder is removed. The parent folder is created if needed.

    >>> with atomic_write(folder / "case.nii.gz") as tmp:   # doctest: +SKIP
    ...     sitk.WriteImage(image, str(tmp), True)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent))
    try:
        yield tmpdir / path.name
        # side files first (MHD's .raw/.zraw), the named file last: a reader never sees a header without data
        for written in sorted(tmpdir.iterdir(), key=lambda f: f.name == path.name):
            os.replace(written, path.parent / written.name)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _new_file_mode(path: Path) -> int:
    """The permissions a plain ``open(path, "w")`` would give: those of the file it replaces, else
    ``0o666`` less the umask (``mkstemp`` creates ``0o600``, which would hide outputs from a lab's group)."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_current_umask()


def _current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (``/proc/self/status``); elsewhere
    set and restored at once (a thread creating a file in between would see umask 0)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextmanager
def _atomic_file(path: str | os.PathLike) -> Iterator[tuple[int, Path]]:
    """One temporary file beside ``path`` (no temporary folder: the fast path): yields its open descriptor
    and the final path; on success it replaces ``path``, on error it is removed. The file gets the
    permissions :func:`_new_file_mode` gives."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, _new_file_mode(path))
        yield fd, path
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with _atomic_file(path) as (fd, final), os.fdopen(fd, "wb") as f:
        f.write(data)
    return final


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npz(path: str | os.PathLike, compress: bool = True, **arrays: np.ndarray) -> Path:
    """``np.savez``/``np.savez_compressed`` written atomically, with fixed zip timestamps so the same arrays
    always give the same bytes (``np.savez`` stamps the current time). Read it with :func:`numpy.load`."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with _atomic_file(path) as (fd, final), os.fdopen(fd, "wb") as f, \
            zipfile.ZipFile(f, "w", compression=method, allowZip64=True) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = method
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return final


def remove_stale_temps(root: str | os.PathLike) -> list[Path]:
    """Delete every temporary file or folder (:func:`is_temp_name`) under ``root``, left by a killed
    writer; returns what was removed. Only call it while no other writer works in ``root``."""
    removed = []
    for folder, dirs, files in os.walk(root):
        for name in [d for d in dirs if is_temp_name(d)]:
            shutil.rmtree(Path(folder) / name, ignore_errors=True)
            dirs.remove(name)
            removed.append(Path(folder) / name)
        for name in files:
            if is_temp_name(name):
                (Path(folder) / name).unlink(missing_ok=True)
                removed.append(Path(folder) / name)
    return sorted(removed)
