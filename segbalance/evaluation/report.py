"""Summaries of per-case rows: mean ± std per method and class with case counts; CSV/JSON/Markdown; plots.

Lesion-level rows (:mod:`segbalance.evaluation.lesions`) are summarised the same way, plus pooled detection
counts: sensitivity, precision and F1 over all lesions of all cases, and sensitivity per lesion-size bin.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np

from segbalance.atomic import atomic_write, atomic_write_text
from segbalance.evaluation.metrics import METRICS

_HIGHER_BETTER = {"dice", "iou", "precision", "recall", "nsd"}


def summarize(rows_by_method: dict[str, list[dict]]) -> list[dict]:
    """One dict per (method, label): ``mean``/``std``/``n`` of each metric over finite values, flag counts.

    NaN values (``both_empty``, recall of ``false_positive``) are excluded and the ``n`` says over how
    many cases each mean is; misses are included with their scores (Dice 0, HD95 = diagonal).
    """
    out = []
    for entry, sel in _groups(rows_by_method):
        for m in METRICS:
            entry[m] = _mean_std([r[m] for r in sel])
        out.append(entry)
    return out


def _groups(rows_by_method: dict[str, list[dict]]):
    """Per method and label (sorted): the summary's head (``method``, ``label``, ``cases``, ``flags``) and
    that group's per-case rows; shared by :func:`summarize` and :func:`summarize_lesions`."""
    for method, rows in rows_by_method.items():
        for label in sorted({r["label"] for r in rows}):
            sel = [r for r in rows if r["label"] == label]
            yield ({"method": method, "label": label, "cases": len(sel),
                    "flags": dict(Counter(r["flag"] for r in sel))}, sel)


def markdown_table(summary: list[dict], metrics: tuple[str, ...] = METRICS) -> str:
    """The papers' table: one row per method and class, mean ± std (n) per metric, and the flag counts."""
    head = "| method | label | " + " | ".join(metrics) + " | flags |"
    lines = [head, "|" + "---|" * (len(metrics) + 3)]
    for e in summary:
        cells = []
        for m in metrics:
            s = e[m]
            cells.append("n/a (n=0)" if not math.isfinite(s["mean"])
                         else f"{s['mean']:.4f} ± {s['std']:.4f} (n={s['n']})")
        flags = ", ".join(f"{k}: {v}" for k, v in sorted(e["flags"].items()))
        lines.append(f"| {e['method']} | {e['label']} | " + " | ".join(cells) + f" | {flags} |")
    return "\n".join(lines) + "\n"


def write_outputs(out_dir: str | os.PathLike, rows_by_method: dict[str, list[dict]], matching: dict,
                  plots: bool = True, lesion_cases: dict[str, list[dict]] | None = None,
                  lesion_rows: dict[str, list[dict]] | None = None,
                  lesion_settings: dict | None = None) -> dict[str, Path]:
    """Write ``per_case.csv``, ``per_case.json``, ``summary.json``, ``summary.md`` and the plots; with lesion
    rows also ``lesions.csv`` (per lesion), ``lesions_per_case.csv`` (per case and class), ``lesions.json``
    (with ``lesion_settings`` — connectivity, matching, IoU threshold, size bins — under ``"settings"``, so
    the counts can be reproduced), the lesion table in ``summary.md`` and ``detection_vs_size.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows_by_method)
    flat = [{"method": m, **r} for m, rows in rows_by_method.items() for r in rows]
    paths = {"csv": out / "per_case.csv", "json": out / "per_case.json", "summary_json": out / "summary.json",
             "summary_md": out / "summary.md"}
    if flat:
        write_csv(paths["csv"], flat)
    atomic_write_text(paths["json"], json.dumps(flat, indent=1, allow_nan=True))
    l_summary = None
    if lesion_cases is not None:
        l_summary = summarize_lesions(lesion_cases, lesion_rows or {})
        l_flat = [{"method": m, **r} for m, rows in lesion_cases.items() for r in rows]
        les_flat = [{"method": m, **r} for m, rows in (lesion_rows or {}).items() for r in rows]
        paths.update(lesions_csv=out / "lesions.csv", lesions_per_case_csv=out / "lesions_per_case.csv",
                     lesions_json=out / "lesions.json")
        write_csv(paths["lesions_per_case_csv"], l_flat)
        write_csv(paths["lesions_csv"], les_flat)
        atomic_write_text(paths["lesions_json"], json.dumps({"settings": lesion_settings or {},
                                                     "summary": l_summary, "per_case": l_flat,
                                                     "lesions": les_flat}, indent=1))
    atomic_write_text(paths["summary_json"], json.dumps({"summary": summary, "matching": matching,
                                                 **({"lesion_summary": l_summary} if l_summary else {})},
                                                indent=1))
    md = markdown_table(summary)
    if l_summary:
        md += "\nLesion level (connected components, one-to-one matching; docs/evaluation.md):\n\n"
        md += lesion_markdown_table(l_summary)
    notes = []
    for method, mt in matching.items():
        if mt.get("missing"):
            notes.append(f"- {method}: predictions missing for {len(mt['missing'])} case(s): "
                         f"{', '.join(mt['missing'])}")
        if mt.get("extra"):
            notes.append(f"- {method}: predictions without ground truth (ignored): {', '.join(mt['extra'])}")
    atomic_write_text(paths["summary_md"], md + ("\n" + "\n".join(notes) + "\n" if notes else ""))
    if plots and flat:
        paths.update(plot_boxes(out, rows_by_method))
        paths["recall_iou"] = plot_recall_vs_iou(out / "recall_vs_iou.png", summary)
        if l_summary:
            paths["detection_vs_size"] = plot_detection_vs_size(out / "detection_vs_size.png", l_summary)
    return paths


def write_csv(path: str | os.PathLike, rows: list[dict], fields: list[str] | None = None) -> Path:
    """``rows`` as CSV (columns ``fields``, default every key in first-seen order), written atomically."""
    fields = fields or list(dict.fromkeys(k for r in rows for k in r)) or ["method"]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


#: per-case lesion metrics averaged over cases (mean ± std, n) in the lesion summary
LESION_MEANS = ("sensitivity", "precision", "f1", "sq", "pq", "lesion_dice", "lesion_hd95", "lesion_nsd",
                "fp_volume_mm3", "fn_volume_mm3")


def _mean_std(values) -> dict:
    v = np.array(values, dtype=float)
    v = v[np.isfinite(v)]
    nan = float("nan")
    return {"mean": float(v.mean()) if v.size else nan, "std": float(v.std()) if v.size else nan,
            "n": int(v.size)}


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def summarize_lesions(cases_by_method: dict[str, list[dict]],
                      lesions_by_method: dict[str, list[dict]] | None = None) -> list[dict]:
    """One dict per (method, label): lesion counts summed over cases (``n_gt``, ``n_pred``, ``tp``, ``fp``,
    ``fn``, autoPET's ``fp_components``/``fn_components``), pooled ``sensitivity``/``precision``/``f1`` over
    all lesions, per-case means of :data:`LESION_MEANS` (``mean``/``std``/``n`` over finite values, as
    :func:`summarize`), and ``by_size``: per size bin the GT lesions, those found, the pooled sensitivity."""
    out = []
    for e, sel in _groups(cases_by_method):
        for k in ("n_gt", "n_pred", "tp", "fp", "fn", "fp_components", "fn_components"):
            e[k] = int(sum(r[k] for r in sel))
        e["pooled"] = {"sensitivity": _ratio(e["tp"], e["n_gt"]),
                       "precision": _ratio(e["tp"], e["n_pred"]),
                       "f1": _ratio(2 * e["tp"], e["n_gt"] + e["n_pred"])}
        for m in LESION_MEANS:
            e[m] = _mean_std([r[m] for r in sel])
        bins = [k[len("n_gt_"):] for k in sel[0] if k.startswith("n_gt_")]
        e["by_size"] = {}
        for b in bins:
            n, tp = int(sum(r[f"n_gt_{b}"] for r in sel)), int(sum(r[f"tp_{b}"] for r in sel))
            e["by_size"][b] = {"n_gt": n, "tp": tp, "sensitivity": _ratio(tp, n)}
        out.append(e)
    return out


def lesion_markdown_table(summary: list[dict]) -> str:
    """Per method and class: GT lesions, found (TP), FP; pooled sensitivity, precision, F1; per-case mean
    PQ, lesion-wise Dice and HD95 (BraTS 2023 style), autoPET FP/FN volume; sensitivity per size bin."""
    if not summary:
        return ""
    bins = list(summary[0]["by_size"])

    def ms(s, digits=3):
        return "n/a" if not math.isfinite(s["mean"]) else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"

    def f(v):
        return "n/a" if not math.isfinite(v) else f"{v:.3f}"

    head = ("| method | label | GT lesions | found | FP | sensitivity | precision | F1 | PQ | lesion Dice "
            "| lesion HD95 (mm) | FP vol (mm³) | FN vol (mm³) | "
            + " | ".join(f"sens {b}" for b in bins) + " |")
    lines = [head, "|" + "---|" * (13 + len(bins))]
    for e in summary:
        p = e["pooled"]
        sizes = " | ".join(f"{f(s['sensitivity'])} ({s['tp']}/{s['n_gt']})"
                           for s in (e["by_size"][b] for b in bins))
        lines.append(f"| {e['method']} | {e['label']} | {e['n_gt']} | {e['tp']} | {e['fp']} | "
                     f"{f(p['sensitivity'])} | {f(p['precision'])} | {f(p['f1'])} | {ms(e['pq'])} | "
                     f"{ms(e['lesion_dice'])} | {ms(e['lesion_hd95'], 1)} | {ms(e['fp_volume_mm3'], 0)} | "
                     f"{ms(e['fn_volume_mm3'], 0)} | {sizes} |")
    return "\n".join(lines) + "\n"


def plot_detection_vs_size(path: Path, lesion_summary: list[dict]) -> Path:
    """Detection rate (pooled sensitivity) against lesion-size bin: a line per method, a panel per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({e["label"] for e in lesion_summary})
    fig, axes = plt.subplots(1, len(labels), figsize=(1.5 + 3.5 * len(labels), 3.5), squeeze=False)
    for ax, lab in zip(axes[0], labels):
        for e in (e for e in lesion_summary if e["label"] == lab):
            bins = list(e["by_size"])
            ax.plot(range(len(bins)), [e["by_size"][b]["sensitivity"] for b in bins], marker="o",
                    label=e["method"])
            ax.set_xticks(range(len(bins)), [f"{b}\n(n={e['by_size'][b]['n_gt']})" for b in bins], fontsize=7)
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(f"label {lab}")
        ax.set_xlabel("lesion volume (mm³)")
        ax.set_ylabel("detection rate (sensitivity)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)


def plot_boxes(out: Path, rows_by_method: dict[str, list[dict]],
               metrics: tuple[str, ...] = ("dice", "hd95", "nsd")) -> dict[str, Path]:
    """One box-plot figure per metric: a panel per class, a box per method (finite values only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({r["label"] for rows in rows_by_method.values() for r in rows})
    paths = {}
    for m in metrics:
        fig, axes = plt.subplots(1, len(labels), figsize=(3 + 2.5 * len(labels), 3.5), squeeze=False)
        for ax, lab in zip(axes[0], labels):
            data = []
            for rows in rows_by_method.values():
                v = np.array([r[m] for r in rows if r["label"] == lab], dtype=float)
                data.append(v[np.isfinite(v)])
            ax.boxplot(data)
            ax.set_xticks(range(1, len(data) + 1), list(rows_by_method), rotation=30)
            ax.set_title(f"label {lab}")
            ax.set_ylabel(m + (" (mm)" if m not in _HIGHER_BETTER else ""))
        fig.tight_layout()
        p = out / f"box_{m}.png"
        save_figure(fig, p)
        plt.close(fig)
        paths[f"box_{m}"] = p
    return paths


def plot_recall_vs_iou(path: Path, summary: list[dict]) -> Path:
    """Mean recall against mean IoU per method (averaged over classes), as Fig. 1 of the Recall-loss paper."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    for method in dict.fromkeys(e["method"] for e in summary):
        ent = [e for e in summary if e["method"] == method]
        iou = np.nanmean([e["iou"]["mean"] for e in ent])
        rec = np.nanmean([e["recall"]["mean"] for e in ent])
        ax.scatter([iou], [rec])
        ax.annotate(method, (iou, rec), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("mean IoU")
    ax.set_ylabel("mean recall")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)


def save_figure(fig, path: str | os.PathLike) -> None:
    """``fig.savefig`` through :func:`segbalance.atomic.atomic_write` (PNG, 100 dpi)."""
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100)
