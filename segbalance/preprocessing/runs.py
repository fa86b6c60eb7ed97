"""Shared machinery of the converters: atomic writes, resume markers, a parallel case runner.

Output folder policy (every converter):

* files are written under a temporary name in their final folder and moved into place with
  :func:`os.replace` (never half-written);
* ``DST/.segbalance/config.json`` records the conversion settings and ``DST/.segbalance/done/<case>.json``
  marks a finished case with its outputs and manifest rows; a re-run skips finished cases whose
  outputs still exist and redoes the rest;
* a non-empty ``DST`` that is not ours, or one made with other settings, is refused unless
  ``overwrite=True`` (then finished-case markers are ignored and outputs rewritten in place);
* sources are only read.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_save_npz",
    "OutputFolder",
    "CaseResult",
    "run_cases",
    "ConversionReport",
]

STATE_DIR = ".segbalance"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder and :func:`os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npz(path: str | os.PathLike, compress: bool = True, **arrays: np.ndarray) -> Path:
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


class OutputFolder:
    """``DST`` with its resume state (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, config: dict[str, Any], overwrite: bool = False,
                 sources: Iterable[str | os.PathLike] = ()):
        self.root = Path(root)
        self.overwrite = overwrite
        self.config = json.loads(json.dumps(config, default=str))
        for src in sources:
            src = Path(src).resolve()
            if self.root.resolve() == src or src in self.root.resolve().parents:
                raise ValueError(f"{self.root}: destination must not be inside the source folder {src}")
        state = self.root / STATE_DIR
        if self.root.exists() and any(self.root.iterdir()) and not overwrite:
            if not state.is_dir():
                raise FileExistsError(
                    f"{self.root}: destination exists and was not written by segbalance convert; "
                    "choose an empty folder or pass --overwrite"
                )
            old = json.loads((state / "config.json").read_text()) if (state / "config.json").exists() else {}
            if old != self.config:
                changed = sorted(k for k in set(old) | set(self.config) if old.get(k) != self.config.get(k))
                raise FileExistsError(
                    f"{self.root}: destination was made with other settings ({', '.join(changed)}); "
                    "choose another folder or pass --overwrite"
                )
        (state / "done").mkdir(parents=True, exist_ok=True)
        atomic_write_text(state / "config.json", json.dumps(self.config, indent=2, sort_keys=True))

    def marker(self, case_id: str) -> Path:
        return self.root / STATE_DIR / "done" / f"{case_id}.json"

    def finished(self, case_id: str) -> dict | None:
        """The stored record of a finished case whose outputs all exist, else ``None``."""
        if self.overwrite:
            return None
        marker = self.marker(case_id)
        if not marker.exists():
            return None
        try:
            record = json.loads(marker.read_text())
        except json.JSONDecodeError:
            return None
        if all((self.root / f).exists() for f in record.get("outputs", [])):
            return record
        return None

    def mark_done(self, case_id: str, record: dict) -> None:
        atomic_write_text(self.marker(case_id), json.dumps(record, default=str))


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
        return "\n".join(lines)


_EXPECTED = (ValueError, FileNotFoundError, OSError, RuntimeError)


def _call(fn: Callable[..., dict], case: Any, kwargs: dict) -> tuple[dict | None, str | None]:
    try:
        return fn(case, **kwargs), None
    except _EXPECTED as exc:
        return None, str(exc)
    except Exception as exc:  # a bug, not bad input: keep the traceback
        return None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"


def run_cases(cases: list, fn: Callable[..., dict], out: OutputFolder, *, jobs: int = 1,
              desc: str = "convert", progress: bool = True, **kwargs: Any) -> ConversionReport:
    """Run ``fn(case, **kwargs) -> record`` on every case not already finished in ``out``.

    Errors of one case are collected, never raised, so every bad case is reported at the end.
    ``jobs > 1`` uses worker processes (``fn`` and the cases must be picklable).
    """
    from tqdm.auto import tqdm

    report = ConversionReport()
    todo = []
    for case in cases:
        record = out.finished(case.case_id)
        if record is not None:
            report.results.append(CaseResult(case.case_id, record, skipped=True))
        else:
            todo.append(case)
    bar = tqdm(total=len(todo), desc=desc, unit="case", disable=not progress)

    def finish(case: Any, record: dict | None, error: str | None) -> None:
        if error is None and record is not None:
            out.mark_done(case.case_id, record)
        report.results.append(CaseResult(case.case_id, record, error))
        bar.update(1)

    if jobs <= 1 or len(todo) <= 1:
        for case in todo:
            finish(case, *_call(fn, case, kwargs))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_call, fn, case, kwargs): case for case in todo}
            for fut in as_completed(futures):
                finish(futures[fut], *fut.result())
    bar.close()
    order = {c.case_id: i for i, c in enumerate(cases)}
    report.results.sort(key=lambda r: order.get(r.case_id, 0))
    return report
