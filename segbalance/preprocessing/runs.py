"""Shared machinery of the converters: the destination folder and its records, the parallel case runner.

What a converter guarantees about ``DST`` (docs/preprocessing.md, "Re-runs and --overwrite"):

* every file is written atomically (:mod:`segbalance.atomic`); a killed run leaves only complete files
  and temporary ``.*.segbalance-tmp`` entries, which the next run deletes;
* ``DST/.segbalance/`` records what segbalance wrote: ``config.json`` (the settings), ``run.json`` (the
  source folder and the run-level files such as ``manifest.csv``), ``done/<case>.json`` per finished case
  (its source files' size + mtime, the settings' digest, its outputs and manifest rows) and
  ``partial/<case>.txt``, the journal of the outputs of a case being written (each name is journaled
  before its file lands, so a killed run leaves no file that is recorded nowhere);
* a case is *done* when its marker's settings digest and source fingerprint equal the current ones, it
  has no journal and all its outputs exist; anything else is redone, and the outputs of its previous
  version that the new one does not write are deleted (all of them when it fails now);
* the outputs of cases no longer in ``SRC`` are deleted; only files recorded in the markers, journals or
  ``run.json`` are ever deleted, and only inside ``DST``;
* a non-empty ``DST`` not written by segbalance, one made with other settings or from another ``SRC``
  is refused unless ``overwrite``; ``overwrite`` redoes every case and deletes every recorded output
  the new run does not write;
* one writer at a time: a second conversion into the same ``DST`` is refused while the first runs;
* a conversion that converts nothing (every case failed, or an error before the first case) leaves nothing
  behind: the folders it created (``DST``, nnU-Net's ``DatasetXXX_Name``) are removed again
  (:class:`NewFolders`), and no manifest without rows is written. When some cases fail, the finished ones
  are kept with their records and the manifest lists them; the failed cases have no record, so the next
  run converts them (and only them) and rewrites the manifest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from segbalance.atomic import (
    TEMP_SUFFIX,
    atomic_save_npz,
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temps,
)
from segbalance.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "STATE_DIR",
    "process_pool",
    "prepare_destination",
    "find_source_cases",
    "require_3d_images",
    "case_fingerprint",
    "CaseOutputs",
    "OutputFolder",
    "CaseResult",
    "ConversionReport",
    "run_cases",
    "write_manifest",
    "NewFolders",
]

STATE_DIR = ".segbalance"


def process_pool(jobs: int) -> ProcessPoolExecutor:
    """The worker pool of every segbalance command that runs cases in parallel.

    Workers are *spawned*, never forked: forking a parent that has loaded torch, OpenMP or BLAS thread
    pools can deadlock, and spawn behaves the same on Linux, macOS and Windows. The price is each worker
    importing its module once (measured in docs/benchmarks-preprocessing.md).
    """
    return ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"))


# ---------------------------------------------------------------------------------------------- inputs


def find_source_cases(src: str | os.PathLike, label_map: dict[int, str] | None = None) -> list:
    """:func:`~segbalance.preprocessing.pairing.find_cases`, refusing a source without any case; each case
    carries ``label_map`` (naming DICOM-SEG segments / RTSTRUCT ROIs, :func:`~.pairing.load_case`)."""
    from segbalance.io.volumes import VOLUME_EXTENSIONS
    from segbalance.preprocessing.pairing import find_cases

    cases = find_cases(src)
    if not cases:
        raise UserError(f"{src}: no cases found: its images folder holds no volume "
                        f"({', '.join(VOLUME_EXTENSIONS)}) and no DICOM series folder")
    for case in cases:
        case.extra["label_map"] = label_map
    return cases


def require_3d_images(cases: Iterable, job: str) -> None:
    """Refuse (one line naming the file) a case whose image is 2D, reading only file headers."""
    from segbalance.io.volumes import image_dimension

    for case in cases:
        path = case.images[0]
        if image_dimension(path) == 2:
            raise UserError(f"{path}: 2D image; {job} need 3D volumes")


def _case_paths(case: Any) -> list[Path]:
    paths = list(case.images) + ([case.label] if case.label is not None else [])
    for value in getattr(case, "extra", {}).values():  # e.g. DICOM label files
        items = value if isinstance(value, (list, tuple)) else [value]
        paths += [Path(v) for v in items if isinstance(v, Path)]
    return paths


def case_fingerprint(case: Any, src: str | os.PathLike) -> list[list]:
    """``[relative path, size, mtime_ns]`` of every file a case is read from (an MHD's data file and each
    file of a DICOM folder included): a changed, added or removed source file changes it."""
    from segbalance.io.volumes import source_files

    src = Path(src)
    out = []
    try:
        for path in _case_paths(case):
            for f in source_files(path):
                st = f.stat()
                out.append([Path(os.path.relpath(f, src)).as_posix(), st.st_size, st.st_mtime_ns])
    except OSError as exc:  # vanished file: never equal to a recorded fingerprint; the read reports it
        out.append(["<unreadable>", str(exc), 0])
    return out


# ---------------------------------------------------------------------------------------------- outputs


def _check_relative(rel: str) -> str:
    parts = PurePosixPath(rel).parts
    if not rel or PurePosixPath(rel).is_absolute() or ".." in parts or parts[0] == STATE_DIR:
        raise ValueError(f"output name {rel!r} must be a relative path inside the destination")
    return PurePosixPath(rel).as_posix()


class CaseOutputs:
    """Where one case's converter writes: every output name is journaled in
    ``DST/.segbalance/partial/<case>.txt`` before its file is written, then listed in :attr:`outputs`."""

    def __init__(self, root: str | os.PathLike, case_id: str):
        self.root = Path(root)
        self.case_id = case_id
        self.outputs: list[str] = []
        self._journal = _journal_path(self.root, case_id)

    def path(self, rel: str) -> Path:
        """Journal ``rel`` (a ``/``-separated path relative to ``DST``) and return its full path."""
        rel = _check_relative(rel)
        with open(self._journal, "a", encoding="utf-8") as f:
            f.write(rel + "\n")
        self.outputs.append(rel)
        return self.root / rel

    def write_bytes(self, rel: str, data: bytes) -> Path:
        return atomic_write_bytes(self.path(rel), data)

    def save_npz(self, rel: str, compress: bool = False, **arrays: np.ndarray) -> Path:
        return atomic_save_npz(self.path(rel), compress=compress, **arrays)

    def write_volume(self, rel: str, volume: Any) -> Path:
        from segbalance.io.volumes import write_volume

        return write_volume(volume, self.path(rel))


def _journal_path(root: Path, case_id: str) -> Path:
    return root / STATE_DIR / "partial" / f"{case_id}.txt"


class NewFolders:
    """The folders among ``paths`` that do not exist yet; on exit, unless :attr:`keep` was set (some case
    converted), they are deleted again, innermost first, when they hold no file outside segbalance's
    ``.segbalance`` records (every output of a failed case is already deleted by then)."""

    def __init__(self, *paths: str | os.PathLike):
        self.new = [Path(p) for p in paths if not Path(p).exists()]
        self.keep = False

    def __enter__(self) -> NewFolders:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.keep and exc[0] is None:
            return
        for folder in reversed(self.new):
            if folder.is_dir() and not any(
                f.is_file() and STATE_DIR not in f.relative_to(folder).parts for f in folder.rglob("*")
            ):
                shutil.rmtree(folder, ignore_errors=True)


def prepare_destination(dst: str | os.PathLike, sources: Iterable[str | os.PathLike] = ()) -> Path:
    """Check ``dst`` (not inside a source, parent folder exists, writable) and create it; one-line
    :class:`~segbalance.errors.UserError` otherwise."""
    dst = Path(dst)
    resolved = dst.resolve()
    for src in sources:
        src = Path(src).resolve()
        if resolved == src or src in resolved.parents:
            raise UserError(f"{dst}: destination must not be inside the source folder {src}")
    if dst.exists() and not dst.is_dir():
        raise UserError(f"{dst}: destination exists and is not a folder")
    if not resolved.parent.is_dir():
        raise UserError(f"{dst}: the destination's parent folder {resolved.parent} does not exist "
                        "(or is not a folder); create it first")
    try:
        dst.mkdir(exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=TEMP_SUFFIX, dir=dst)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{dst}: cannot write to the destination folder ({exc.strerror or exc})") from None
    return dst


class OutputFolder:
    """``DST`` with its records (see the module docstring). Use as a context manager: it holds the
    destination's lock until closed."""

    def __init__(self, root: str | os.PathLike, config: dict[str, Any], overwrite: bool = False,
                 source: str | os.PathLike | None = None):
        self.root = Path(root)
        self.overwrite = overwrite
        self.config = json.loads(json.dumps(config, default=str))
        self.digest = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).hexdigest()[:16]
        self.source = str(Path(source).resolve()) if source is not None else None
        self.state = self.root / STATE_DIR
        had_content = self.root.exists() and any(p.name != STATE_DIR for p in self.root.iterdir())
        had_state = (self.state / "config.json").is_file()
        if had_content and not had_state and not overwrite:  # refuse before creating anything in DST
            raise UserError(f"{self.root}: destination exists and was not written by segbalance convert; "
                            "choose an empty folder or pass --overwrite")
        try:
            (self.state / "done").mkdir(parents=True, exist_ok=True)
            (self.state / "partial").mkdir(exist_ok=True)
        except OSError as exc:
            raise UserError(f"{self.root}: cannot write to the destination folder ({exc.strerror})") from None
        self._lock = self._acquire_lock()
        try:
            if had_state and not overwrite:
                self._refuse_mismatch()
            remove_stale_temps(self.root)
            self._run = self._read_json(self.state / "run.json") or {}
            atomic_write_text(self.state / "config.json", json.dumps(self.config, indent=2, sort_keys=True))
            self._run_outputs: set[str] = set(self._run.get("outputs", []))
            self._save_run()
        except BaseException:
            self.close()
            raise

    # -- lifecycle

    def _acquire_lock(self) -> Any:
        handle = open(self.state / "lock", "a")
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise UserError(f"{self.root}: another segbalance convert is writing to this destination") \
                    from None
        return handle

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _refuse_mismatch(self) -> None:
        old = self._read_json(self.state / "config.json")
        if old != self.config:
            old = old if isinstance(old, dict) else {}
            changed = sorted(k for k in set(old) | set(self.config) if old.get(k) != self.config.get(k))
            raise UserError(f"{self.root}: destination was made with other settings ({', '.join(changed)}); "
                            "choose another folder or pass --overwrite")
        old_source = (self._read_json(self.state / "run.json") or {}).get("source")
        if old_source and self.source and old_source != self.source:
            raise UserError(f"{self.root}: destination holds a conversion of {old_source}, not of "
                            f"{self.source}; choose another folder or pass --overwrite")

    # -- records

    @staticmethod
    def _read_json(path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _save_run(self) -> None:
        run = {"source": self.source or self._run.get("source"), "outputs": sorted(self._run_outputs)}
        atomic_write_text(self.state / "run.json", json.dumps(run, indent=1))

    def marker(self, case_id: str) -> Path:
        return self.state / "done" / f"{case_id}.json"

    def fingerprint(self, case: Any) -> list[list]:
        return case_fingerprint(case, self.source or ".")

    def finished(self, case_id: str, fingerprint: list[list] | None = None) -> dict | None:
        """The record of a finished case that is still up to date (see the module docstring), else None."""
        if self.overwrite or _journal_path(self.root, case_id).exists():
            return None
        record = self._read_json(self.marker(case_id))
        if not isinstance(record, dict) or record.get("settings") != self.digest:
            return None
        if fingerprint is not None and record.get("sources") != fingerprint:
            return None
        if all((self.root / f).is_file() for f in record.get("outputs", [])):
            return record
        return None

    def _recorded_outputs(self, case_id: str) -> list[str]:
        record = self._read_json(self.marker(case_id))
        outputs = list(record.get("outputs", [])) if isinstance(record, dict) else []
        journal = _journal_path(self.root, case_id)
        if journal.exists():
            outputs += [line for line in journal.read_text(encoding="utf-8").splitlines() if line]
        return outputs

    def claim(self, case_id: str) -> None:
        """Before redoing a case: move its marker's outputs into its journal, then drop the marker."""
        journal = _journal_path(self.root, case_id)
        old = self._read_json(self.marker(case_id))
        lines = list(old.get("outputs", [])) if isinstance(old, dict) else []
        torn = journal.exists() and not journal.read_bytes().endswith(b"\n")  # killed mid-line
        if lines or torn:
            with open(journal, "a", encoding="utf-8") as f:
                f.write(("\n" if torn else "") + "".join(f"{rel}\n" for rel in lines))
        self.marker(case_id).unlink(missing_ok=True)

    def mark_done(self, case_id: str, fingerprint: list[list], record: dict) -> None:
        """Record a finished case, then delete what its journal lists that it no longer writes."""
        record = {"settings": self.digest, "sources": fingerprint, **record}
        atomic_write_text(self.marker(case_id), json.dumps(record, default=str))
        keep = set(record.get("outputs", []))
        self._remove([rel for rel in self._recorded_outputs(case_id) if rel not in keep])
        _journal_path(self.root, case_id).unlink(missing_ok=True)

    def discard(self, case_id: str) -> None:
        """Delete every recorded output of a case (failed now, or gone from the source) and its records."""
        self._remove(self._recorded_outputs(case_id))
        self.marker(case_id).unlink(missing_ok=True)
        _journal_path(self.root, case_id).unlink(missing_ok=True)

    def recorded_cases(self) -> set[str]:
        """Case ids with a marker or a journal."""
        done = {p.stem for p in (self.state / "done").glob("*.json")}
        return done | {p.stem for p in (self.state / "partial").glob("*.txt")}

    def write_run_file(self, rel: str, data: str | bytes) -> Path:
        """Write a run-level file (manifest, dataset.json) and record it as ours."""
        rel = _check_relative(rel)
        self._run_outputs.add(rel)
        self._save_run()
        return atomic_write_bytes(self.root / rel, data.encode("utf-8") if isinstance(data, str) else data)

    def remove_run_file(self, rel: str) -> None:
        """Delete a run-level file if segbalance wrote it (e.g. a dataset.json that no longer applies)."""
        if rel in self._run_outputs:
            self._remove([rel])
            self._run_outputs.discard(rel)
            self._save_run()

    def _remove(self, rels: Iterable[str]) -> None:
        """Delete recorded outputs: regular files (or links) inside ``DST`` only, never folders."""
        root = self.root.resolve()
        for rel in rels:
            try:
                rel = _check_relative(rel)
            except ValueError:
                continue
            path = self.root / rel
            if root not in path.parent.resolve().parents and path.parent.resolve() != root:
                continue  # a linked folder pointing outside DST
            if path.is_symlink() or path.is_file():
                path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- running


@dataclass
class CaseResult:
    case_id: str
    record: dict | None = None  # {"outputs": [...], "rows": [...], ...}
    error: str | None = None
    skipped: bool = False


@dataclass
class ConversionReport:
    results: list[CaseResult] = field(default_factory=list)

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if r.error]

    @property
    def done(self) -> list[CaseResult]:
        return [r for r in self.results if not r.error]

    def rows(self) -> list[dict]:
        return [row for r in self.done for row in (r.record or {}).get("rows", [])]

    def summary(self) -> str:
        n_skip = sum(r.skipped for r in self.results)
        lines = [f"{len(self.done)} case(s) converted ({n_skip} already done), {len(self.failed)} failed"]
        lines += [f"  FAILED {r.case_id}: {r.error}" for r in self.failed]
        if self.failed and not self.done:
            lines.append("nothing written: no case converted (the folders this run created are removed)")
        elif self.failed:
            lines.append("incomplete: the finished cases are kept; run the same command again once the "
                         "failed cases are fixed and only those are converted")
        return "\n".join(lines)


_EXPECTED = (ValueError, FileNotFoundError, OSError, RuntimeError)


def _call(fn: Callable[..., dict], case: Any, root: str, kwargs: dict) -> tuple[dict | None, str | None]:
    out = CaseOutputs(root, case.case_id)
    try:
        record = dict(fn(case, out, **kwargs))
        record["outputs"] = out.outputs
        return record, None
    except _EXPECTED as exc:
        return None, str(exc)
    except Exception as exc:  # a bug, not bad input: keep the traceback
        return None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"


def run_cases(cases: list, fn: Callable[..., dict], out: OutputFolder, *, jobs: int = 1,
              desc: str = "convert", progress: bool = True, **kwargs: Any) -> ConversionReport:
    """Run ``fn(case, outputs: CaseOutputs, **kwargs) -> record`` on every case of ``cases`` that is not
    done in ``out``; outputs of cases no longer in ``cases`` are deleted first.

    ``fn`` writes through ``outputs`` (which fills ``record["outputs"]``). Errors of one case are
    collected, never raised, so every bad case is reported at the end. ``jobs > 1`` runs the cases in
    :func:`process_pool` workers (``fn`` and the cases must be picklable).
    """
    from tqdm.auto import tqdm

    ids = {case.case_id for case in cases}
    for gone in sorted(out.recorded_cases() - ids):
        out.discard(gone)
    report = ConversionReport()
    todo = []
    for case in cases:
        fingerprint = out.fingerprint(case)
        record = out.finished(case.case_id, fingerprint)
        if record is not None:
            report.results.append(CaseResult(case.case_id, record, skipped=True))
        else:
            out.claim(case.case_id)
            todo.append((case, fingerprint))
    bar = tqdm(total=len(todo), desc=desc, unit="case", disable=not progress)

    def finish(case: Any, fingerprint: list[list], record: dict | None, error: str | None) -> None:
        if error is None and record is not None:
            out.mark_done(case.case_id, fingerprint, record)
        else:
            out.discard(case.case_id)
        report.results.append(CaseResult(case.case_id, record, error))
        bar.update(1)

    root = str(out.root)
    if jobs <= 1 or len(todo) <= 1:
        for case, fingerprint in todo:
            finish(case, fingerprint, *_call(fn, case, root, kwargs))
    else:
        with process_pool(min(jobs, len(todo))) as pool:
            futures = {pool.submit(_call, fn, case, root, kwargs): (case, fp) for case, fp in todo}
            for fut in as_completed(futures):
                finish(*futures[fut], *fut.result())
    bar.close()
    order = {c.case_id: i for i, c in enumerate(cases)}
    report.results.sort(key=lambda r: order.get(r.case_id, 0))
    return report


def write_manifest(out: OutputFolder, rows: list[dict], name: str = "manifest") -> None:
    """``<name>.csv`` and ``<name>.json`` (the same rows) in ``out``, recorded as run-level outputs; without
    rows (no case converted) none is written and an earlier one is removed."""
    if not rows:
        out.remove_run_file(f"{name}.csv")
        out.remove_run_file(f"{name}.json")
        return
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval=0, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    out.write_run_file(f"{name}.csv", buf.getvalue())
    out.write_run_file(f"{name}.json", json.dumps(rows, indent=1))


def report_exit_code(report, dst: str | os.PathLike) -> int:
    """Print a run report's summary (to stderr when a case failed) and where it wrote; the command's exit
    code: 0, or 1 when a case failed. Shared by ``convert``, ``predict`` and ``export-seg``."""
    print(report.summary(), file=sys.stderr if report.failed else sys.stdout)
    if not report.failed:
        print(f"written to {dst}")
    return 1 if report.failed else 0
