"""Summaries of per-case rows: mean ± std per method and class with case counts; CSV/JSON/Markdown; plots."""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np

from segbalance.evaluation.metrics import METRICS

_HIGHER_BETTER = {"dice", "iou", "precision", "recall", "nsd"}


def summarize(rows_by_method: dict[str, list[dict]]) -> list[dict]:
    """One dict per (method, label): ``mean``/``std``/``n`` of each metric over finite values, flag counts.

    NaN values (``both_empty``, recall of ``false_positive``) are excluded and the ``n`` says over how
    many cases each mean is; misses are included with their scores (Dice 0, HD95 = diagonal).
    """
    out = []
    for method, rows in rows_by_method.items():
        for label in sorted({r["label"] for r in rows}):
            sel = [r for r in rows if r["label"] == label]
            entry: dict = {"method": method, "label": label, "cases": len(sel),
                           "flags": dict(Counter(r["flag"] for r in sel))}
            for m in METRICS:
                v = np.array([r[m] for r in sel], dtype=float)
                v = v[np.isfinite(v)]
                entry[m] = {"mean": float(v.mean()) if v.size else float("nan"),
                            "std": float(v.std()) if v.size else float("nan"), "n": int(v.size)}
            out.append(entry)
    return out


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
                  plots: bool = True) -> dict[str, Path]:
    """Write ``per_case.csv``, ``per_case.json``, ``summary.json``, ``summary.md`` and the plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows_by_method)
    flat = [{"method": m, **r} for m, rows in rows_by_method.items() for r in rows]
    paths = {"csv": out / "per_case.csv", "json": out / "per_case.json", "summary_json": out / "summary.json",
             "summary_md": out / "summary.md"}
    if flat:
        with open(paths["csv"], "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(flat[0]))
            w.writeheader()
            w.writerows(flat)
    paths["json"].write_text(json.dumps(flat, indent=1, allow_nan=True))
    paths["summary_json"].write_text(json.dumps({"summary": summary, "matching": matching}, indent=1))
    md = markdown_table(summary)
    notes = []
    for method, mt in matching.items():
        if mt.get("missing"):
            notes.append(f"- {method}: predictions missing for {len(mt['missing'])} case(s): "
                         f"{', '.join(mt['missing'])}")
        if mt.get("extra"):
            notes.append(f"- {method}: predictions without ground truth (ignored): {', '.join(mt['extra'])}")
    paths["summary_md"].write_text(md + ("\n" + "\n".join(notes) + "\n" if notes else ""))
    if plots and flat:
        paths.update(plot_boxes(out, rows_by_method))
        paths["recall_iou"] = plot_recall_vs_iou(out / "recall_vs_iou.png", summary)
    return paths


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
        fig.savefig(p, dpi=100)
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
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
