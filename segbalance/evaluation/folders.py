"""Evaluate a folder of predictions against a folder of ground truth, matched by case id.

Files are NIfTI/MHD/NRRD volumes (other files, such as nnU-Net's ``.json``/``.pkl``, are ignored), read
with :func:`segbalance.preprocessing.io.read_volume`; the grids must agree (shape exactly, spacing,
origin and direction within tolerance), else a ``ValueError`` names both files. Metrics use the
ground truth's spacing. Cases run in a process pool (``jobs``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from segbalance.evaluation.metrics import evaluate_case, missing_prediction

_SKIP = (".json", ".pkl", ".npz", ".npy", ".txt", ".csv")


def volumes_by_case(folder: str | os.PathLike, role: str) -> dict[str, Path]:
    """``{case id: path}`` of the volume files directly in ``folder``; ``role`` names it in errors."""
    from segbalance.preprocessing.io import VOLUME_EXTENSIONS, case_id

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{role} folder {folder} does not exist")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        name = p.name.lower()
        if (not p.is_file() or name.endswith(_SKIP) or not name.endswith(VOLUME_EXTENSIONS)
                or name.endswith(".dcm")):
            continue
        cid = case_id(p)
        if cid in out:
            raise ValueError(f"{role} folder {folder}: case {cid!r} appears twice "
                             f"({out[cid].name}, {p.name})")
        out[cid] = p
    if not out:
        raise ValueError(f"{role} folder {folder} holds no .nii/.nii.gz/.mhd/.mha/.nrrd volumes")
    return out


@dataclass
class FolderResult:
    """Per-case rows (dicts with ``case`` and the :class:`ClassMetrics` fields) and the case matching."""

    rows: list[dict]
    missing: list[str] = field(default_factory=list)  # GT cases without a prediction
    extra: list[str] = field(default_factory=list)  # predictions without a GT case


def _evaluate_pair(args: tuple) -> list[dict]:
    import numpy as np

    from segbalance.preprocessing.io import read_volume
    from segbalance.preprocessing.pairing import check_geometry

    cid, gt_path, pred_path, labels, nsd_tolerance, use_subvoxels = args
    gt = read_volume(gt_path)
    gt_arr = np.asarray(gt.array)
    if pred_path is None:
        rows = missing_prediction(gt_arr, gt.spacing, labels, nsd_tolerance)
    else:
        pred = read_volume(pred_path)
        check_geometry(gt, pred)
        rows = evaluate_case(np.asarray(pred.array), gt_arr, gt.spacing, labels, nsd_tolerance, use_subvoxels)
    return [{"case": cid, **r.as_dict()} for r in rows]


def evaluate_folders(
    gt_dir: str | os.PathLike,
    pred_dir: str | os.PathLike,
    labels: Sequence[int] | None = None,
    nsd_tolerance: float | Mapping[int, float] = 1.0,
    use_subvoxels: bool = False,
    allow_missing: bool = False,
    jobs: int = 1,
    progress: bool = True,
) -> FolderResult:
    """Score every ground-truth case; missing predictions count as misses unless ``allow_missing``.

    Without ``labels``, every label >= 1 seen in any case is scored in every case (a class absent from
    both files of a case becomes a ``both_empty`` row, so each mean states how many cases it is over).
    """
    gts = volumes_by_case(gt_dir, "ground-truth")
    preds = volumes_by_case(pred_dir, "prediction")
    missing = sorted(set(gts) - set(preds))
    extra = sorted(set(preds) - set(gts))
    todo = [c for c in sorted(gts) if c in preds or not allow_missing]
    tasks = [(c, gts[c], preds.get(c), labels, nsd_tolerance, use_subvoxels) for c in todo]
    from tqdm import tqdm

    if jobs > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            results = list(tqdm(pool.map(_evaluate_pair, tasks), total=len(tasks), disable=not progress,
                                desc=f"evaluate {Path(pred_dir).name}"))
    else:
        bar = tqdm(tasks, disable=not progress, desc=f"evaluate {Path(pred_dir).name}")
        results = [_evaluate_pair(t) for t in bar]
    rows = [r for case_rows in results for r in case_rows]
    if labels is None:
        rows = _fill_absent_labels(rows, [c for c in todo])
    return FolderResult(rows=rows, missing=missing, extra=extra)


def _fill_absent_labels(rows: list[dict], cases: list[str]) -> list[dict]:
    """Add ``both_empty`` NaN rows for labels seen elsewhere but absent from a case."""
    nan = float("nan")
    seen = sorted({r["label"] for r in rows})
    have = {(r["case"], r["label"]) for r in rows}
    tol = {r["label"]: r["nsd_tolerance"] for r in rows}
    missing_flag = {r["case"] for r in rows if r["flag"] == "missing_prediction"}
    for c in cases:
        for lab in seen:
            if (c, lab) not in have:
                flag = "missing_prediction" if c in missing_flag else "both_empty"
                rows.append({"case": c, "label": lab, "dice": nan, "iou": nan, "precision": nan,
                             "recall": nan, "hd95": nan, "asd": nan, "nsd": nan, "flag": flag, "gt_voxels": 0,
                             "pred_voxels": 0, "tp": 0, "nsd_tolerance": tol[lab]})
    rows.sort(key=lambda r: (r["case"], r["label"]))
    return rows
