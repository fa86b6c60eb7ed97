"""``segbalance evaluate``: score one or more prediction folders against a ground-truth folder, per voxel and
per lesion (docs/evaluation.md)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

#: a method name becomes a file name (``OUT/.cache/NAME.json``) and a table column: letters, digits, ``._+-``
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


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


def parse_pred(items: list[str], option: str = "--pred") -> dict[str, str]:
    """``["CE=dir1", "runs/dir2"]`` -> ``{"CE": "dir1", "dir2": "runs/dir2"}`` (a bare folder is named after
    its last component). Names must be safe file names: letters, digits and ``._+-``, starting with a letter
    or digit (no path separator, no ``..``), else ``ValueError``."""
    out: dict[str, str] = {}
    for item in items:
        name, _, path = item.partition("=") if "=" in item else (Path(item.rstrip("/\\")).name, "", item)
        if not _SAFE_NAME.fullmatch(name) or ".." in name:
            raise ValueError(f"{option} {item!r}: method name {name!r} is not a safe file name (use letters, "
                             "digits and ._+- only, starting with a letter or digit; no / or ..)")
        if not path:
            raise ValueError(f"{option} {item!r}: no folder after '='")
        if name in out:
            raise ValueError(f"{option}: method name {name!r} given twice")
        out[name] = path
    return out


def parse_bins(text: str | None) -> tuple[float, ...]:
    """``"100,1000"`` -> ``(100.0, 1000.0)``: lesion size-bin edges in mm³."""
    from segbalance.evaluation.lesions import DEFAULT_SIZE_BINS_MM3, _check_bins

    if text is None:
        return DEFAULT_SIZE_BINS_MM3
    try:
        return _check_bins([float(v) for v in text.split(",")])
    except ValueError:
        raise ValueError(f"--size-bins: expected increasing volumes in mm³ such as 100,1000, "
                         f"got {text!r}") from None


def _labels_arg(text: str | None, option: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{option}: expected comma-separated integer labels, got {text!r}") from None


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
        "evaluate", help="Dice, IoU, precision, recall, HD95, ASD, surface Dice per case and class; lesion "
                         "detection (sensitivity, precision, F1, PQ), lesion-wise Dice/HD95",
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
    g = p.add_argument_group("lesion-level metrics (connected components; docs/evaluation.md)")
    g.add_argument("--no-lesions", action="store_true", help="skip the lesion-level metrics")
    g.add_argument("--lesion-labels", help="classes scored per lesion (default: every scored class)")
    g.add_argument("--connectivity", type=int, choices=(6, 18, 26), default=26,
                   help="voxel connectivity of a lesion (default 26; in 2D images 6 means 4, 18/26 mean 8)")
    g.add_argument("--matching", choices=("iou", "overlap"), default="iou",
                   help="match lesions one-to-one by IoU >= --iou-threshold (default) or by any overlap")
    g.add_argument("--iou-threshold", type=float, default=0.5, help="IoU needed for a match (default 0.5)")
    g.add_argument("--size-bins",
                   help="lesion volume bin edges in mm³ for the sensitivity per size (default 100,1000)")
    d = p.add_argument_group("detection from score maps: FROC, AP, case AUROC (picai_eval's definitions)")
    d.add_argument("--scores", action="append", default=[],
                   help="NAME=FOLDER of score maps of method NAME (a --pred name), same case names: float "
                        "probability or detection maps (.nii.gz/.nrrd/.mha, one class) or nnU-Net's .npz "
                        "from --save_probabilities (classes: --lesion-labels, else --labels); repeatable")
    d.add_argument("--hit-iou", type=float, default=None,
                   help="IoU a candidate needs to hit a GT lesion (default: the lesion rule, "
                        "--iou-threshold, or any overlap with --matching overlap; picai_eval uses 0.1)")
    d.add_argument("--score-floor", type=float, default=0.0,
                   help="candidates are the connected components of score > FLOOR (default 0, picai_eval's "
                        "rule for detection maps; set e.g. 0.1 for probability maps)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segbalance.atomic import atomic_write_text
    from segbalance.evaluation.folders import FolderResult, evaluate_folders
    from segbalance.evaluation.report import (
        detection_markdown_table,
        lesion_markdown_table,
        markdown_table,
        summarize,
        summarize_detections,
        summarize_lesions,
        write_outputs,
    )
    from segbalance.evaluation.strict_json import dumps_strict, loads_strict, nan_for_null

    labels = _labels_arg(args.labels, "--labels")
    tol = parse_tolerances(args.nsd_tolerance)
    if isinstance(tol, dict) and labels is None:
        labels = sorted(tol)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    if not 0 < args.iou_threshold <= 1:
        raise ValueError(f"--iou-threshold must be in (0, 1], got {args.iou_threshold}")
    preds = parse_pred(args.pred)
    if not Path(args.gt).is_dir():
        raise FileNotFoundError(f"--gt: ground-truth folder {args.gt} does not exist")
    for name, folder in preds.items():
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--pred {name}: prediction folder {folder} does not exist")
    lesion_labels = _labels_arg(args.lesion_labels, "--lesion-labels")
    if labels and lesion_labels and not set(lesion_labels) <= set(labels):
        raise ValueError(f"--lesion-labels {args.lesion_labels}: not among the scored --labels {labels}")
    lesions = None if args.no_lesions else {
        "labels": lesion_labels, "connectivity": args.connectivity,
        "matching": args.matching, "iou_threshold": args.iou_threshold,
        "size_bins_mm3": parse_bins(args.size_bins)}
    scores = parse_pred(args.scores, option="--scores") if args.scores else {}
    for name, folder in scores.items():
        if name not in preds:
            raise ValueError(f"--scores {name}: no --pred {name} (score maps belong to a method)")
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--scores {name}: score folder {folder} does not exist")
    detection = None
    if scores:
        det_labels = lesion_labels or labels
        if not det_labels:
            raise ValueError("--scores: name the detection class(es) with --lesion-labels (or --labels)")
        hit = args.hit_iou if args.hit_iou is not None else (0.0 if args.matching == "overlap"
                                                               else args.iou_threshold)
        if not 0 <= hit <= 1:
            raise ValueError(f"--hit-iou must be in [0, 1], got {hit}")
        if not args.score_floor >= 0:
            raise ValueError(f"--score-floor must be >= 0, got {args.score_floor}")
        detection = {"labels": det_labels, "score_floor": args.score_floor, "hit_iou": hit,
                     "connectivity": args.connectivity}
    rows, pairing, lesion_cases, lesion_rows, detections, spacing = {}, {}, {}, {}, {}, {}
    cache_dir = Path(args.out) / ".cache"
    for name, folder in preds.items():
        key = {"gt": str(Path(args.gt).resolve()), "pred": str(Path(folder).resolve()), "labels": labels,
               "tol": tol if not isinstance(tol, dict) else {str(k): v for k, v in tol.items()},
               "subvoxels": args.subvoxels, "allow_missing": args.allow_missing, "lesions": lesions,
               "scores": str(Path(scores[name]).resolve()) if name in scores else None,
               "detection": detection if name in scores else None,
               "mtimes": _mtimes(args.gt, folder, *([scores[name]] if name in scores else []))}
        key = json.loads(json.dumps(key))  # as read back from the cache (tuples become lists)
        cache = cache_dir / f"{name}.json"
        cached = None
        if cache.is_file() and not args.no_resume:
            try:
                cached = loads_strict(cache.read_text())
            except ValueError:  # an older cache (NaN written as NaN) or a damaged one: recompute
                cached = None
        if cached and cached.get("key") == key:  # resume: this method was already scored on these files
            print(f"{name}: reusing results in {cache} (--no-resume to recompute)")
            body = nan_for_null({k: cached.get(k, []) for k in ("rows", "lesion_cases", "lesions")})
            res = FolderResult(body["rows"], cached["missing"], cached["extra"], body["lesion_cases"],
                               body["lesions"], cached.get("detections", []), cached.get("spacing", {}),
                               cached.get("missing_scores", []))
        else:
            res = evaluate_folders(args.gt, folder, labels, tol, args.subvoxels, args.allow_missing,
                                   args.jobs, progress=sys.stderr.isatty(), lesions=lesions,
                                   scores_dir=scores.get(name),
                                   detection=detection if name in scores else None)
            # atomic: a run killed while writing must not leave a cache the next run cannot parse
            atomic_write_text(cache, dumps_strict({
                "key": key, "rows": res.rows, "missing": res.missing, "extra": res.extra,
                "lesion_cases": res.lesion_cases, "lesions": res.lesions, "detections": res.detections,
                "spacing": res.spacing, "missing_scores": res.missing_scores}))
        rows[name] = res.rows
        lesion_cases[name], lesion_rows[name] = res.lesion_cases, res.lesions
        spacing[name] = res.spacing
        if name in scores:
            detections[name] = res.detections
        pairing[name] = {"missing": res.missing, "extra": res.extra,
                         **({"missing_scores": res.missing_scores} if name in scores else {})}
        if res.missing:
            how = "skipped" if args.allow_missing else "scored as misses"
            print(f"{name}: {len(res.missing)} case(s) without prediction ({how}): {', '.join(res.missing)}")
        if res.extra:
            print(f"{name}: {len(res.extra)} prediction(s) without ground truth (ignored): "
                  f"{', '.join(res.extra)}")
        if res.missing_scores:
            print(f"{name}: {len(res.missing_scores)} case(s) without a score map (no candidates): "
                  f"{', '.join(res.missing_scores)}")
    settings = {"labels": labels if labels is not None else "every label >= 1 seen in any case",
                "nsd_tolerance_mm": tol if not isinstance(tol, dict) else {str(k): v for k, v in tol.items()},
                "subvoxels": args.subvoxels, "hd_percentile": 95.0,
                "empty_policy": "docs/evaluation.md, 'Empty structures: the policy'"}
    paths = write_outputs(args.out, rows, pairing, plots=not args.no_plots,
                          lesion_cases=None if lesions is None else lesion_cases,
                          lesion_rows=None if lesions is None else lesion_rows, lesion_settings=lesions,
                          settings=settings, spacing=spacing, detections=detections or None,
                          detection_settings=detection)
    print(markdown_table(summarize(rows)))
    if lesions is not None:
        print(lesion_markdown_table(summarize_lesions(lesion_cases, lesion_rows)))
    if detections:
        print(detection_markdown_table(summarize_detections(detections)))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
