"""Summaries of per-case rows: mean ± std per method and class with case counts; CSV/JSON/Markdown; plots.

Lesion-level rows (:mod:`segbalance.evaluation.lesions`) are summarised the same way, plus pooled detection
counts: sensitivity, precision and F1 over all lesions of all cases, and sensitivity per lesion-size bin.
"""

from __future__ import annotations

import csv
import io
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


def lesion_rule(settings: dict | None) -> str:
    """One line naming every setting the lesion figures depend on (the heading of the lesion table)."""
    st = settings or {}
    conn = st.get("connectivity", 26)
    if st.get("matching", "iou") == "overlap":
        rule = "matched one-to-one by any overlap (largest IoU first)"
    else:
        rule = f"matched one-to-one by IoU >= {st.get('iou_threshold', 0.5):g} (largest IoU first)"
    bins = ", ".join(f"{v:g}" for v in st.get("size_bins_mm3", ()))
    return (f"connected components ({conn}-connectivity), {rule}; size-bin edges {bins} mm³ "
            f"(lower edge inclusive); volumes from the ground truth's spacing")


def _spacing_summary(spacing_by_method: dict | None) -> list[dict]:
    """The distinct spacings used (mm, z y x) with the cases that have each."""
    seen: dict[tuple, set] = {}
    for per_case in (spacing_by_method or {}).values():
        for case, sp in per_case.items():
            seen.setdefault(tuple(sp), set()).add(case)
    return [{"spacing_mm_zyx": list(sp), "cases": len(c)} for sp, c in sorted(seen.items())]


def write_outputs(out_dir: str | os.PathLike, rows_by_method: dict[str, list[dict]], case_pairing: dict,
                  plots: bool = True, lesion_cases: dict[str, list[dict]] | None = None,
                  lesion_rows: dict[str, list[dict]] | None = None,
                  lesion_settings: dict | None = None, settings: dict | None = None,
                  spacing: dict | None = None, detections: dict[str, list[dict]] | None = None,
                  detection_settings: dict | None = None) -> dict[str, Path]:
    """Write ``per_case.csv``, ``per_case.json``, ``summary.json``, ``summary.md`` and the plots; with lesion
    rows also ``lesions.csv`` (per lesion), ``lesions_per_case.csv`` (per case and class), ``lesions.json``
    and the lesion table in ``summary.md`` and ``detection_vs_size.png``; with ``detections`` (per method:
    the per-case rows of :func:`segbalance.evaluation.detection.detect_case`) ``detection.json`` and
    ``froc.png``.

    Every JSON file is strict (:mod:`.strict_json`: NaN and inf written as null, ``"null_means"`` says why)
    and states the settings its figures depend on (``"settings"``: voxel-metric options, the spacing used,
    the lesion rule, the detection rule). ``case_pairing`` (per method: ``missing`` and ``extra`` cases) is
    written under that key in ``summary.json``.
    """
    from segbalance.evaluation.strict_json import NULL_MEANS, dumps_strict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows_by_method)
    flat = [{"method": m, **r} for m, rows in rows_by_method.items() for r in rows]
    paths = {"csv": out / "per_case.csv", "json": out / "per_case.json", "summary_json": out / "summary.json",
             "summary_md": out / "summary.md"}
    all_settings = {**(settings or {}), "spacing": {
        "source": "each case's ground-truth file, as the file states it, in float64 (float32 NIfTI pixdim "
                  "read as its shortest decimal)", "used": _spacing_summary(spacing)}}
    if lesion_settings is not None:
        all_settings["lesions"] = {**lesion_settings, "rule": lesion_rule(lesion_settings)}
    if detection_settings is not None and detections is not None:
        all_settings["detection"] = detection_settings
    if flat:
        write_csv(paths["csv"], flat)
    atomic_write_text(paths["json"], dumps_strict({"settings": all_settings, "null_means": NULL_MEANS,
                                                   "rows": flat}, indent=1))
    l_summary = None
    if lesion_cases is not None:
        l_summary = summarize_lesions(lesion_cases, lesion_rows or {})
        l_flat = [{"method": m, **r} for m, rows in lesion_cases.items() for r in rows]
        les_flat = [{"method": m, **r} for m, rows in (lesion_rows or {}).items() for r in rows]
        paths.update(lesions_csv=out / "lesions.csv", lesions_per_case_csv=out / "lesions_per_case.csv",
                     lesions_json=out / "lesions.json")
        write_csv(paths["lesions_per_case_csv"], l_flat)
        write_csv(paths["lesions_csv"], les_flat)
        atomic_write_text(paths["lesions_json"], dumps_strict({
            "settings": all_settings.get("lesions", {}), "null_means": NULL_MEANS, "summary": l_summary,
            "per_case": l_flat, "lesions": les_flat}, indent=1))
    d_summary = None
    if detections is not None:
        d_summary = summarize_detections(detections)
        paths["detection_json"] = out / "detection.json"
        atomic_write_text(paths["detection_json"], dumps_strict({
            "settings": {**(detection_settings or {}), "spacing": all_settings["spacing"]},
            "null_means": NULL_MEANS, "results": d_summary,
            "per_case": [{"method": m, **r} for m, rows in detections.items() for r in rows]}, indent=1))
    atomic_write_text(paths["summary_json"], dumps_strict({
        "settings": all_settings, "null_means": NULL_MEANS, "summary": summary, "case_pairing": case_pairing,
        **({"lesion_summary": l_summary} if l_summary else {}),
        **({"detection_summary": [{k: v for k, v in e.items() if k != "froc"} for e in d_summary]}
           if d_summary else {})}, indent=1))
    md = settings_markdown(all_settings) + "\n" + markdown_table(summary)
    if l_summary:
        md += f"\nLesion level ({lesion_rule(lesion_settings)}; docs/evaluation.md):\n\n"
        md += lesion_markdown_table(l_summary)
    if d_summary:
        md += f"\nDetection from score maps ({detection_rule(detection_settings)}; docs/evaluation.md):\n\n"
        md += detection_markdown_table(d_summary)
    notes = []
    for method, mt in case_pairing.items():
        if mt.get("missing"):
            notes.append(f"- {method}: predictions missing for {len(mt['missing'])} case(s): "
                         f"{', '.join(mt['missing'])}")
        if mt.get("extra"):
            notes.append(f"- {method}: predictions without ground truth (ignored): {', '.join(mt['extra'])}")
        if mt.get("missing_scores"):
            notes.append(f"- {method}: score maps missing for {len(mt['missing_scores'])} case(s) (no "
                         f"candidates): {', '.join(mt['missing_scores'])}")
    atomic_write_text(paths["summary_md"], md + ("\n" + "\n".join(notes) + "\n" if notes else ""))
    if plots and flat:
        paths.update(plot_boxes(out, rows_by_method))
        paths["recall_iou"] = plot_recall_vs_iou(out / "recall_vs_iou.png", summary)
        if l_summary:
            paths["detection_vs_size"] = plot_detection_vs_size(out / "detection_vs_size.png", l_summary)
        if d_summary:
            paths["froc"] = plot_froc(out / "froc.png", d_summary)
    return paths


def settings_markdown(settings: dict) -> str:
    """The settings every figure of ``summary.md`` depends on, as a bullet list."""
    lines = ["Settings:", ""]
    for key in ("labels", "nsd_tolerance_mm", "subvoxels", "hd_percentile", "empty_policy"):
        if key in settings:
            lines.append(f"- {key}: {settings[key]}")
    used = settings.get("spacing", {}).get("used", [])
    sp = "; ".join(f"{' × '.join(f'{v:g}' for v in u['spacing_mm_zyx'])} mm ({u['cases']} case(s))"
                   for u in used)
    lines.append(f"- spacing (z × y × x, the ground truth's): {sp or 'n/a'}")
    if "lesions" in settings:
        lines.append(f"- lesions: {settings['lesions']['rule']}")
    if "detection" in settings:
        lines.append(f"- detection: {detection_rule(settings['detection'])}")
    return "\n".join(lines) + "\n"


def detection_rule(settings: dict | None) -> str:
    """One line naming every setting the detection figures depend on."""
    st = settings or {}
    hit = st.get("hit_iou", 0.1)
    hit_s = "any overlap" if hit == 0 else f"IoU >= {hit:g}"
    return (f"candidates = connected components ({st.get('connectivity', 26)}-connectivity) of score > "
            f"{st.get('score_floor', 0.0):g}, scored by their maximum; hit = {hit_s}; one-to-one assignment "
            "maximising hits then total IoU (picai_eval's); a candidate that hits an already assigned lesion "
            "is ignored; case score = highest candidate")


def summarize_detections(detections: dict[str, list[dict]]) -> list[dict]:
    """Per method and class: :func:`segbalance.evaluation.detection.detection_metrics` of its cases."""
    from segbalance.evaluation.detection import CaseDetections, detection_metrics

    out = []
    fields = ("label", "n_gt", "n_candidates", "case_score", "entries", "ignored")
    for method, rows in detections.items():
        for label in sorted({r["label"] for r in rows}):
            cases = [CaseDetections(**{k: r[k] for k in fields}) for r in rows if r["label"] == label]
            for c in cases:
                c.entries = [tuple(e) for e in c.entries]
            out.append({"method": method, "label": label, **detection_metrics(cases)})
    return out


def detection_markdown_table(summary: list[dict]) -> str:
    """Per method and class: GT lesions, candidates, AP, case AUROC, sensitivity at 1/8 … 8 FP per case."""
    if not summary:
        return ""
    rates = list(summary[0]["sensitivity_at_fp"])

    def f(v):
        return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"

    head = ("| method | label | cases (+) | GT lesions | candidates | AP | case AUROC | "
            + " | ".join(f"sens @ {r} FP" for r in rates) + " |")
    lines = [head, "|" + "---|" * (7 + len(rates))]
    for e in summary:
        lines.append(f"| {e['method']} | {e['label']} | {e['n_cases']} ({e['n_positive_cases']}) | "
                     f"{e['n_gt_lesions']} | {e['n_candidates']} | {f(e['ap'])} | {f(e['auroc'])} | "
                     + " | ".join(f(e["sensitivity_at_fp"][r]) for r in rates) + " |")
    return "\n".join(lines) + "\n"


def plot_froc(path: Path, summary: list[dict]) -> Path:
    """FROC curves (sensitivity against false positives per case, log scale 1/8 … 8): a line per method, a
    panel per class."""
    labels = sorted({e["label"] for e in summary})
    fig, axes = _figure(1, len(labels), (1.5 + 4 * len(labels), 3.8))
    for ax, lab in zip(axes[0], labels):
        for e in (e for e in summary if e["label"] == lab):
            fp, sens = e["froc"]["fp_per_case"], e["froc"]["sensitivity"]
            if sens and sens[0] is not None and math.isfinite(sens[0]):
                x = [max(v, 1 / 16) for v in fp] + [16.0]
                ax.step(x, list(sens) + [sens[-1]], where="post",
                        label=f"{e['method']} (AP {e['ap']:.2f})" if math.isfinite(e["ap"]) else e["method"])
        ax.set_xscale("log", base=2)
        ax.set_xlim(1 / 8, 8)
        ax.set_xticks([0.125, 0.25, 0.5, 1, 2, 4, 8], ["1/8", "1/4", "1/2", "1", "2", "4", "8"])
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"label {lab}")
        ax.set_xlabel("false positives per case")
        ax.set_ylabel("sensitivity")
        ax.legend(fontsize=7, loc="lower right")
    _layout(fig)
    save_figure(fig, path)
    return Path(path)


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
                "cc_dice", "cc_nsd", "fp_volume_mm3", "fn_volume_mm3")


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
            "| lesion HD95 (mm) | CC Dice | CC NSD | FP vol (mm³) | FN vol (mm³) | "
            + " | ".join(f"sens {b}" for b in bins) + " |")
    lines = [head, "|" + "---|" * (15 + len(bins))]
    for e in summary:
        p = e["pooled"]
        sizes = " | ".join(f"{f(s['sensitivity'])} ({s['tp']}/{s['n_gt']})"
                           for s in (e["by_size"][b] for b in bins))
        lines.append(f"| {e['method']} | {e['label']} | {e['n_gt']} | {e['tp']} | {e['fp']} | "
                     f"{f(p['sensitivity'])} | {f(p['precision'])} | {f(p['f1'])} | {ms(e['pq'])} | "
                     f"{ms(e['lesion_dice'])} | {ms(e['lesion_hd95'], 1)} | {ms(e['cc_dice'])} | "
                     f"{ms(e['cc_nsd'])} | "
                     f"{ms(e['fp_volume_mm3'], 0)} | "
                     f"{ms(e['fn_volume_mm3'], 0)} | {sizes} |")
    return "\n".join(lines) + "\n"


def plot_detection_vs_size(path: Path, lesion_summary: list[dict]) -> Path:
    """Detection rate (pooled sensitivity) against lesion-size bin: a line per method, a panel per class."""
    labels = sorted({e["label"] for e in lesion_summary})
    fig, axes = _figure(1, len(labels), (1.5 + 3.5 * len(labels), 3.5))
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
    _layout(fig)
    save_figure(fig, path)
    return Path(path)


def plot_boxes(out: Path, rows_by_method: dict[str, list[dict]],
               metrics: tuple[str, ...] = ("dice", "hd95", "nsd")) -> dict[str, Path]:
    """One box-plot figure per metric: a panel per class, a box per method (finite values only)."""
    labels = sorted({r["label"] for rows in rows_by_method.values() for r in rows})
    paths = {}
    for m in metrics:
        fig, axes = _figure(1, len(labels), (3 + 2.5 * len(labels), 3.5))
        for ax, lab in zip(axes[0], labels):
            data = []
            for rows in rows_by_method.values():
                v = np.array([r[m] for r in rows if r["label"] == lab], dtype=float)
                data.append(v[np.isfinite(v)])
            ax.boxplot(data)
            ax.set_xticks(range(1, len(data) + 1), list(rows_by_method), rotation=30)
            ax.set_title(f"label {lab}")
            ax.set_ylabel(m + (" (mm)" if m not in _HIGHER_BETTER else ""))
        _layout(fig)
        p = out / f"box_{m}.png"
        save_figure(fig, p)
        paths[f"box_{m}"] = p
    return paths


def plot_recall_vs_iou(path: Path, summary: list[dict]) -> Path:
    """Mean recall against mean IoU per method (averaged over classes), as Fig. 1 of the Recall-loss paper."""
    fig, axes = _figure(1, 1, (4.5, 4))
    ax = axes[0][0]
    for method in dict.fromkeys(e["method"] for e in summary):
        ent = [e for e in summary if e["method"] == method]
        iou = np.nanmean([e["iou"]["mean"] for e in ent])
        rec = np.nanmean([e["recall"]["mean"] for e in ent])
        ax.scatter([iou], [rec])
        ax.annotate(method, (iou, rec), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("mean IoU")
    ax.set_ylabel("mean recall")
    _layout(fig)
    save_figure(fig, path)
    return Path(path)


def _figure(rows: int, cols: int, figsize: tuple[float, float]):
    """A figure and its axes grid without pyplot (no GUI backend, no global figure registry): pyplot's import
    and ``tight_layout`` were a large part of a cold ``segbalance evaluate``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _layout(fig) -> None:
    """Fixed margins (inches turned into fractions) instead of the slower ``tight_layout``."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.75 / w, right=1 - 0.15 / w, bottom=0.75 / h, top=1 - 0.35 / h,
                        wspace=0.35)


def save_figure(fig, path: str | os.PathLike) -> None:
    """``fig.savefig`` through :func:`segbalance.atomic.atomic_write` (PNG, 100 dpi)."""
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100)
