"""Evaluate a folder of predictions against a folder of ground truth, matched by case id.

Files are NIfTI/MHD/NRRD volumes (other files, such as nnU-Net's ``.json``/``.pkl``, are ignored), read
with :func:`segbalance.preprocessing.io.read_volume`; the grids must agree (shape exactly, spacing,
origin and direction within tolerance), else a ``ValueError`` names both files. Metrics use the
ground truth's spacing. Label values must be non-negative integers (a float file holding whole numbers is
accepted), else a ``ValueError`` names the file. With ``lesions`` (a dict of
:func:`segbalance.evaluation.lesions.evaluate_lesions` options) each case also gets its lesion-level
metrics; with ``detection`` and a folder of score maps, its detection candidates (:mod:`.detection`). The
spacing is the ground truth's as the file states it (:func:`file_spacing`). Cases run in a process pool
(``jobs``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from segbalance.evaluation.metrics import evaluate_case, missing_prediction

_SKIP = (".json", ".pkl", ".npz", ".npy", ".txt", ".csv")


def volumes_by_case(folder: str | os.PathLike, role: str) -> dict[str, Path]:
    """``{case id: path}`` of the volume files directly in ``folder``; ``role`` names it in errors."""
    from segbalance.io.volumes import VOLUME_EXTENSIONS, case_id

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
    """Per-case rows (dicts with ``case`` and the :class:`ClassMetrics` fields) and the case matching;
    with lesion metrics, ``lesion_cases`` (per case and class) and ``lesions`` (per lesion) rows too."""

    rows: list[dict]
    missing: list[str] = field(default_factory=list)  # GT cases without a prediction
    extra: list[str] = field(default_factory=list)  # predictions without a GT case
    lesion_cases: list[dict] = field(default_factory=list)
    lesions: list[dict] = field(default_factory=list)
    detections: list[dict] = field(default_factory=list)  # per case and class (detection.CaseDetections)
    spacing: dict = field(default_factory=dict)  # case -> the spacing used (mm, z y x)
    missing_scores: list[str] = field(default_factory=list)  # scored cases without a score map


def check_label_values(array, path) -> None:
    """Refuse a label map with negative or non-integer values (e.g. probabilities), naming ``path``."""
    import numpy as np

    if array.dtype.kind in "ui" or array.dtype == bool:
        if array.dtype.kind == "i" and array.size and array.min() < 0:
            raise ValueError(f"{path}: label values must be >= 0, found {array.min()}")
        return
    if array.dtype.kind != "f":
        raise ValueError(f"{path}: label map must hold integers, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: label map holds NaN or infinite values")
    if array.size and array.min() < 0:
        raise ValueError(f"{path}: label values must be >= 0, found {array.min():g}")
    frac = array != np.floor(array)
    if frac.any():
        raise ValueError(f"{path}: label values must be integers, found {array[frac].flat[0]:g} "
                         "(a probability map? save the argmax label map)")


def file_spacing(spacing) -> tuple[float, ...]:
    """The spacing a file states, in float64: a value that is exactly a float32 (NIfTI stores ``pixdim`` as
    float32, so 0.7 mm reads back as 0.699999988…) becomes the shortest decimal that float32 prints (0.7);
    float64 values (NRRD, MHA) stay as they are. Volumes in mm³ and the size bins then use the spacing the
    file's author wrote, so a lesion of 100 mm³ is not 99.99999 mm³.

    >>> import numpy as np
    >>> file_spacing((float(np.float32(0.7)), 0.8, 2.0))
    (0.7, 0.8, 2.0)
    """
    import numpy as np

    out = []
    for s in spacing:
        s = float(s)
        f32 = np.float32(s)
        out.append(float(str(f32)) if float(f32) == s and np.isfinite(f32) else s)
    return tuple(out)


def _evaluate_pair(args: tuple) -> dict:
    import numpy as np

    from segbalance.io.volumes import read_volume
    from segbalance.preprocessing.pairing import check_geometry

    cid, gt_path, pred_path, labels, nsd_tolerance, use_subvoxels, lesions, score_path, detection = args
    gt = read_volume(gt_path)
    spacing = file_spacing(gt.spacing)
    gt_arr = np.asarray(gt.array)
    check_label_values(gt_arr, gt_path)
    if pred_path is None:
        pred_arr = np.zeros_like(gt_arr)
        rows = missing_prediction(gt_arr, spacing, labels, nsd_tolerance)
    else:
        pred = read_volume(pred_path)
        check_geometry(gt, pred)
        pred_arr = np.asarray(pred.array)
        check_label_values(pred_arr, pred_path)
        rows = evaluate_case(pred_arr, gt_arr, spacing, labels, nsd_tolerance, use_subvoxels)
    l_cases, l_rows = [], []
    if lesions is not None:
        from segbalance.evaluation.lesions import evaluate_lesions

        opts = dict(lesions)
        lesion_labels = opts.pop("labels", None)
        lab = [r.label for r in rows] if lesion_labels is None else [v for v in lesion_labels
                                                                       if v in {r.label for r in rows}]
        res = evaluate_lesions(pred_arr, gt_arr, spacing, lab, nsd_tolerance=nsd_tolerance, **opts)
        for r in res.classes:
            if pred_path is None:
                r["flag"] = "missing_prediction"
            l_cases.append({"case": cid, **r})
        l_rows = [{"case": cid, **r} for r in res.lesions]
    dets = []
    if detection is not None:
        from segbalance.evaluation.detection import detect_case
        from segbalance.evaluation.scores import read_scores

        det_labels = list(detection["labels"])
        maps = read_scores(score_path, det_labels, gt) if score_path is not None else {}
        for lab in det_labels:
            score = maps.get(lab, np.zeros(gt_arr.shape, np.float32))
            d = detect_case(score, gt_arr == lab, lab, detection["score_floor"], detection["hit_iou"],
                            detection["connectivity"])
            dets.append({"case": cid, "score_map_missing": score_path is None, **d.as_dict()})
    return {"rows": [{"case": cid, **r.as_dict()} for r in rows], "lesion_cases": l_cases, "lesions": l_rows,
            "detections": dets, "spacing": list(spacing)}


def evaluate_folders(
    gt_dir: str | os.PathLike,
    pred_dir: str | os.PathLike,
    labels: Sequence[int] | None = None,
    nsd_tolerance: float | Mapping[int, float] = 1.0,
    use_subvoxels: bool = False,
    allow_missing: bool = False,
    jobs: int = 1,
    progress: bool = True,
    lesions: Mapping | None = None,
    scores_dir: str | os.PathLike | None = None,
    detection: Mapping | None = None,
) -> FolderResult:
    """Score every ground-truth case; missing predictions count as misses unless ``allow_missing``.

    Without ``labels``, every label >= 1 seen in any case is scored in every case (a class absent from
    both files of a case becomes a ``both_empty`` row, so each mean states how many cases it is over).
    ``lesions``: options of :func:`segbalance.evaluation.lesions.evaluate_lesions` (``connectivity``,
    ``matching``, ``iou_threshold``, ``size_bins_mm3``, and ``labels``: the classes to score per lesion,
    default all scored classes); ``None`` skips the lesion metrics. ``scores_dir`` with ``detection``
    (``labels``, ``score_floor``, ``hit_iou``, ``connectivity``): score maps of the same cases
    (:mod:`.scores`) scored by :func:`segbalance.evaluation.detection.detect_case`; a case without a score
    map counts as one without candidates and is listed in ``missing_scores``.
    """
    gts = volumes_by_case(gt_dir, "ground-truth")
    preds = volumes_by_case(pred_dir, "prediction")
    missing = sorted(set(gts) - set(preds))
    extra = sorted(set(preds) - set(gts))
    todo = [c for c in sorted(gts) if c in preds or not allow_missing]
    scores: dict = {}
    if detection is not None:
        from segbalance.evaluation.scores import score_files_by_case

        scores = score_files_by_case(scores_dir)
    tasks = [(c, gts[c], preds.get(c), labels, nsd_tolerance, use_subvoxels, lesions, scores.get(c),
              detection) for c in todo]
    from tqdm import tqdm

    if jobs > 1 and len(tasks) > 1:
        from segbalance.preprocessing.runs import process_pool  # spawn, the one pool rule

        with process_pool(jobs) as pool:
            results = list(tqdm(pool.map(_evaluate_pair, tasks), total=len(tasks), disable=not progress,
                                desc=f"evaluate {Path(pred_dir).name}"))
    else:
        bar = tqdm(tasks, disable=not progress, desc=f"evaluate {Path(pred_dir).name}")
        results = [_evaluate_pair(t) for t in bar]
    rows = [r for res in results for r in res["rows"]]
    l_cases = [r for res in results for r in res["lesion_cases"]]
    l_rows = [r for res in results for r in res["lesions"]]
    dets = [r for res in results for r in res["detections"]]
    spacing = {c: res["spacing"] for c, res in zip(todo, results)}
    if labels is None:
        rows = _fill_absent_labels(rows, [c for c in todo])
        if lesions is not None:
            l_cases = _fill_absent_lesion_labels(l_cases, rows, lesions.get("labels"))
    return FolderResult(rows=rows, missing=missing, extra=extra, lesion_cases=l_cases, lesions=l_rows,
                        detections=dets, spacing=spacing,
                        missing_scores=sorted(c for c in todo if detection is not None and c not in scores))


def _fill_absent_lesion_labels(l_cases: list[dict], rows: list[dict], lesion_labels) -> list[dict]:
    """Lesion rows for the (case, label) pairs that :func:`_fill_absent_labels` added: nothing to detect."""
    from segbalance.evaluation.lesions import empty_class_row

    have = {(r["case"], r["label"]) for r in l_cases}
    template = l_cases[0] if l_cases else None
    for r in rows:
        key = (r["case"], r["label"])
        if key in have or (lesion_labels is not None and r["label"] not in lesion_labels) or template is None:
            continue
        l_cases.append({"case": r["case"], **empty_class_row(r["label"], list(template), r["flag"])})
    l_cases.sort(key=lambda r: (r["case"], r["label"]))
    return l_cases


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
