"""``segbalance evaluate``: score one or more prediction folders against a ground-truth folder."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def parse_tolerances(text: str | None) -> float | dict[int, float]:
    """``"2.0"`` -> 2.0; ``"1=2.0,2=1.0"`` -> ``{1: 2.0, 2: 1.0}``."""
    if text is None:
        return 1.0
    try:
        if "=" not in text:
            return float(text)
        return {int(k): float(v) for k, v in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise ValueError(f"--nsd-tolerance: expected MM or LABEL=MM[,LABEL=MM...], got {text!r}") from None


def parse_pred(items: list[str]) -> dict[str, str]:
    """``["CE=dir1", "dir2"]`` -> ``{"CE": "dir1", "dir2": "dir2"}``."""
    out: dict[str, str] = {}
    for item in items:
        name, _, path = item.partition("=") if "=" in item else (item, "", item)
        if name in out:
            raise ValueError(f"--pred: method name {name!r} given twice")
        out[name] = path
    return out


def _mtimes(*folders: str) -> list:
    """(folder, name, size, mtime) of each file: cached results are reused only while these are equal."""
    out = []
    for folder in folders:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.is_file():
                st = entry.stat()
                out.append([folder, entry.name, st.st_size, st.st_mtime_ns])
    return out


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="Dice, IoU, precision, recall, HD95, ASD, surface Dice per case and class",
        description="Score prediction folders against ground truth (NIfTI/MHD/NRRD, matched by case id).")
    p.add_argument("--gt", required=True, help="folder of ground-truth label volumes")
    p.add_argument("--pred", required=True, action="append",
                   help="NAME=FOLDER (or FOLDER) of predictions; repeat to compare methods")
    p.add_argument("--out", required=True, help="output folder (CSV, JSON, Markdown, plots)")
    p.add_argument("--labels", help="comma-separated labels to score (default: every label >= 1 seen)")
    p.add_argument("--nsd-tolerance", help="surface Dice tolerance in mm: 1.0 or 1=2.0,2=1.0 (default 1.0)")
    p.add_argument("--subvoxels", action="store_true", help="surface Dice with sub-voxel surface elements")
    p.add_argument("--allow-missing", action="store_true",
                   help="skip (and list) ground-truth cases without a prediction instead of scoring misses")
    p.add_argument("-j", "--jobs", type=int, default=1, help="cases evaluated in parallel (processes)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-resume", action="store_true",
                   help="recompute methods already scored in OUT/.cache on unchanged files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segbalance.evaluation.folders import FolderResult, evaluate_folders
    from segbalance.evaluation.report import markdown_table, summarize, write_outputs

    labels = [int(v) for v in args.labels.split(",")] if args.labels else None
    tol = parse_tolerances(args.nsd_tolerance)
    if isinstance(tol, dict) and labels is None:
        labels = sorted(tol)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    rows, matching = {}, {}
    cache_dir = Path(args.out) / ".cache"
    for name, folder in parse_pred(args.pred).items():
        key = {"gt": str(Path(args.gt).resolve()), "pred": str(Path(folder).resolve()), "labels": labels,
               "tol": tol if not isinstance(tol, dict) else {str(k): v for k, v in tol.items()},
               "subvoxels": args.subvoxels, "allow_missing": args.allow_missing,
               "mtimes": _mtimes(args.gt, folder)}
        cache = cache_dir / f"{name}.json"
        cached = json.loads(cache.read_text()) if cache.is_file() and not args.no_resume else None
        if cached and cached.get("key") == key:  # resume: this method was already scored on these files
            print(f"{name}: reusing results in {cache} (--no-resume to recompute)")
            res = FolderResult(cached["rows"], cached["missing"], cached["extra"])
        else:
            res = evaluate_folders(args.gt, folder, labels, tol, args.subvoxels, args.allow_missing,
                                   args.jobs)
            cache_dir.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"key": key, "rows": res.rows, "missing": res.missing,
                                         "extra": res.extra}))
        rows[name] = res.rows
        matching[name] = {"missing": res.missing, "extra": res.extra}
        if res.missing:
            how = "skipped" if args.allow_missing else "scored as misses"
            print(f"{name}: {len(res.missing)} case(s) without prediction ({how}): {', '.join(res.missing)}")
        if res.extra:
            print(f"{name}: {len(res.extra)} prediction(s) without ground truth (ignored): "
                  f"{', '.join(res.extra)}")
    paths = write_outputs(args.out, rows, matching, plots=not args.no_plots)
    print(markdown_table(summarize(rows)))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
