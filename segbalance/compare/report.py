"""The report of ``segbalance compare``: per trainer over folds, per case against a baseline, plots.

* :func:`aggregate` — per trainer, mean ± std over folds of each fold's means, and lesion counts summed over
  the folds (the phantom benchmark's table);
* :func:`versus_baseline` — per fold differences with a consistency rule (the benchmark's, for 2-3 folds);
* :func:`paired_statistics` — per *case* paired comparisons against the baseline: Wilcoxon signed-rank
  (``scipy.stats.wilcoxon``, two-sided) of the per-case differences, Holm's correction across the metrics
  of one trainer's comparison, and a bootstrap 95 % CI (``scipy.stats.bootstrap``, percentile) of the
  difference in lesions found. A case scored in several folds (a held-out test set) enters once, with the
  mean over the folds in which both trainers were scored; no p-value with fewer than
  :data:`MIN_PAIRS_FOR_P` paired cases;
* :func:`write_report` — ``report.md``, ``report.json`` and PNG plots (lesion sensitivity per size bin,
  false positives per case, voxel Dice per class, per trainer).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
from pathlib import Path

import numpy as np

from segbalance.atomic import atomic_write_text

__all__ = ["aggregate", "versus_baseline", "markdown", "markdown_versus", "paired_statistics", "holm",
           "per_case_values", "write_report", "machine", "MIN_PAIRS_FOR_P", "VERSUS", "BOOTSTRAP"]

#: fewer paired cases give no p-value: with 5 the smallest two-sided exact Wilcoxon p is 2/32 = 0.0625
MIN_PAIRS_FOR_P = 6
#: the bootstrap of the difference in lesions found (resampling cases; fixed seed: the report is reproducible)
BOOTSTRAP = {"n_resamples": 9999, "confidence_level": 0.95, "method": "percentile", "seed": 0}
#: per-fold quantities compared with the baseline
VERSUS = ("dice_organ", "dice_lesion", "lesion_sensitivity", "lesion_f1", "lesions_found")


def _mean_std(values: list[float]) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    return {"mean": float(v.mean()) if v.size else None, "std": float(v.std()) if v.size else None,
            "n": int(v.size),
            # segbalance evaluate writes strict JSON: an undefined mean (NaN) is read back as None
            "values": [float("nan") if x is None else float(x) for x in values]}


def aggregate(records: list[dict], lesion_label: int = 2, names: dict[int, str] | None = None) -> list[dict]:
    """Per trainer, over folds: mean ± std of each fold's test-set means (voxel Dice per class, HD95 of the
    lesion class, lesion sensitivity / precision / F1, lesion-wise Dice) and the lesions found (matched
    one-to-one at IoU >= 0.5) / missed / false-positive components summed over the folds' cases, the
    lesions touched by any predicted voxel, and the lesions found per size bin. ``names``: class value →
    the name in the keys (``dice_<name>``; default ``{1: "organ", lesion_label: "lesion"}``)."""
    names = names or {1: "organ", lesion_label: "lesion"}
    by_trainer: dict[str, list[dict]] = {}
    for r in records:
        by_trainer.setdefault(r["trainer"], []).append(r)
    rows = []
    for trainer, runs in by_trainer.items():
        row: dict = {"trainer": trainer, "folds": [r["fold"] for r in runs]}
        voxel = [{s["label"]: s for s in r["evaluation"]["summary.json"]["summary"]} for r in runs]
        lesion = [{s["label"]: s for s in r["evaluation"]["lesions.json"]["summary"]} for r in runs]
        for label, name in names.items():
            row[f"dice_{name}"] = _mean_std([v[label]["dice"]["mean"] if label in v else None for v in voxel])
        row[f"hd95_{names[lesion_label]}"] = _mean_std([v[lesion_label]["hd95"]["mean"] for v in voxel])
        les = [x[lesion_label] for x in lesion]
        for key in ("sensitivity", "precision", "f1", "lesion_dice", "pq"):
            name = key if key.startswith("lesion") else f"lesion_{key}"
            row[name] = _mean_std([x[key]["mean"] for x in les])
        row["lesions_gt"] = int(sum(x["n_gt"] for x in les))
        row["lesions_found"] = int(sum(x["tp"] for x in les))
        row["lesions_found_per_fold"] = [int(x["tp"]) for x in les]
        row["lesions_missed"] = int(sum(x["fn"] for x in les))
        row["false_positive_lesions"] = int(sum(x["fp"] for x in les))
        # any predicted voxel on the lesion (autoPET's criterion, independent of the IoU matching)
        row["lesions_touched"] = int(sum(x["n_gt"] - x["fn_components"] for x in les))
        row["by_size"] = {k: {"n_gt": int(sum(x["by_size"][k]["n_gt"] for x in les)),
                              "found": int(sum(x["by_size"][k]["tp"] for x in les))}
                          for k in les[0]["by_size"]}
        rows.append(row)
    return rows


def versus_baseline(rows: list[dict], baseline: str = "nnUNetTrainer",
                    keys: tuple[str, ...] = VERSUS) -> list[dict]:
    """Each trainer minus the baseline, paired by fold, for ``keys``: the per-fold differences, their
    mean and std, and ``exceeds``: the difference exceeds the spread when every fold's difference has the
    same sign and its mean is larger than both trainers' std over folds (with 3 folds, no p-value is
    meaningful; this rule only separates differences that are consistent and larger than the fold-to-fold
    spread from those that are not). Empty when the baseline was not run."""
    base = next((r for r in rows if r["trainer"] == baseline), None)
    if base is None:
        return []

    def per_fold(row: dict, key: str) -> dict[int, float]:
        values = row["lesions_found_per_fold"] if key == "lesions_found" else row[key]["values"]
        return {f: float(v) for f, v in zip(row["folds"], values) if v is not None and np.isfinite(v)}

    out = []
    for row in rows:
        if row is base:
            continue
        entry: dict = {"trainer": row["trainer"], "baseline": baseline}
        for key in keys:
            a, b = per_fold(row, key), per_fold(base, key)
            folds = sorted(set(a) & set(b))
            diffs = np.array([a[f] - b[f] for f in folds])
            spread = max(np.std([a[f] for f in folds]), np.std([b[f] for f in folds])) if folds else 0.0
            same_sign = bool(diffs.size) and (bool(np.all(diffs > 0)) or bool(np.all(diffs < 0)))
            entry[key] = {"folds": folds, "diffs": diffs.tolist(),
                          "mean": float(diffs.mean()) if diffs.size else None,
                          "std": float(diffs.std()) if diffs.size else None,
                          "exceeds": bool(len(folds) >= 2 and same_sign and abs(diffs.mean()) > spread)}
        out.append(entry)
    return out


def markdown_versus(entries: list[dict], keys: tuple[str, ...] = VERSUS) -> str:
    """The :func:`versus_baseline` table: mean difference ± std over folds, ``*`` where it exceeds spread."""
    lines = ["| trainer − " + (entries[0]["baseline"] if entries else "baseline") + " | "
             + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for e in entries:
        cells = []
        for key in keys:
            d = e[key]
            digits = 1 if key == "lesions_found" else 3
            cells.append("n/a" if d["mean"] is None else
                         f"{d['mean']:+.{digits}f} ± {d['std']:.{digits}f}{' *' if d['exceeds'] else ''}")
        lines.append(f"| {e['trainer']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ms(d: dict, digits: int = 3) -> str:
    """mean ± std; ``(n=k)`` when only k folds define it (no predicted lesion: no precision)."""
    if d["mean"] is None:
        return "n/a"
    part = f" (n={d['n']})" if d["n"] < len(d["values"]) else ""
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}{part}"


def markdown(rows: list[dict]) -> str:
    """The benchmark's table (organ and lesion)."""
    lines = ["| trainer | Dice organ | Dice lesion | HD95 lesion (mm) | lesion sensitivity "
             "| lesion precision | lesion F1 | lesion-wise Dice | found / missed / FP |",
             "|---|" + "---:|" * 8]
    for r in rows:
        lines.append(f"| {r['trainer']} | {_ms(r['dice_organ'])} | {_ms(r['dice_lesion'])} | "
                     f"{_ms(r['hd95_lesion'], 1)} | {_ms(r['lesion_sensitivity'])} | "
                     f"{_ms(r['lesion_precision'])} | "
                     f"{_ms(r['lesion_f1'])} | {_ms(r['lesion_dice'])} | "
                     f"{r['lesions_found']} / {r['lesions_missed']} / {r['false_positive_lesions']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- per case
def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _voxel_rows(evaluation: dict) -> list[dict]:
    """``segbalance evaluate``'s per-case voxel rows: ``per_case.json`` is ``{"settings", "null_means",
    "rows"}`` (strict JSON), a bare list in older records."""
    data = evaluation.get("per_case.json", [])
    return data.get("rows", []) if isinstance(data, dict) else data


def per_case_values(records: list[dict], labels: list[int], lesion_labels: list[int]) -> dict:
    """``{trainer: {metric: {case: [(fold, value), ...]}}}`` from the runs' per-case rows: ``dice_<L>`` (voxel
    Dice of class L), and per lesion class ``lesions_found_<L>``, ``lesion_sensitivity_<L>`` (undefined
    without a ground-truth lesion: left out), ``fp_<L>`` (false-positive components)."""
    out: dict = {}
    for r in records:
        m = out.setdefault(r["trainer"], {})
        for row in _voxel_rows(r["evaluation"]):
            if row["label"] in labels and _finite(row.get("dice")):
                cases = m.setdefault(f"dice_{row['label']}", {})
                cases.setdefault(row["case"], []).append((r["fold"], row["dice"]))
        for row in r["evaluation"].get("lesions.json", {}).get("per_case", []):
            lab = row["label"]
            if lab not in lesion_labels:
                continue
            sensitivity = row.get("sensitivity") if row["n_gt"] else None
            for key, value in ((f"lesions_found_{lab}", row["tp"]), (f"fp_{lab}", row["fp"]),
                               (f"lesion_sensitivity_{lab}", sensitivity)):
                if _finite(value):
                    m.setdefault(key, {}).setdefault(row["case"], []).append((r["fold"], value))
    return out


def _paired(a: dict, b: dict) -> tuple[list[str], np.ndarray, np.ndarray, list[int]]:
    """Cases scored for both trainers: per case the mean over the folds both have; the folds used."""
    cases, va, vb, folds = [], [], [], set()
    for case in sorted(set(a) & set(b)):
        fa, fb = dict(a[case]), dict(b[case])
        common = sorted(set(fa) & set(fb))
        if not common:
            continue
        cases.append(case)
        va.append(float(np.mean([fa[f] for f in common])))
        vb.append(float(np.mean([fb[f] for f in common])))
        folds |= set(common)
    return cases, np.asarray(va), np.asarray(vb), sorted(folds)


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and does not count in the family)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    order = sorted(idx, key=lambda i: pvalues[i])
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def _bootstrap_total(diffs: np.ndarray) -> tuple[float, float] | None:
    """The 95 % CI of the summed per-case differences (the difference in lesions found), resampling cases."""
    from scipy import stats

    if diffs.size < 2:
        return None
    if np.all(diffs == diffs[0]):
        return float(diffs.sum()), float(diffs.sum())
    res = stats.bootstrap((diffs,), np.sum, n_resamples=BOOTSTRAP["n_resamples"],
                          confidence_level=BOOTSTRAP["confidence_level"], method=BOOTSTRAP["method"],
                          rng=np.random.default_rng(BOOTSTRAP["seed"]))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_statistics(values: dict, baseline: str) -> list[dict]:
    """Per trainer ≠ ``baseline`` and metric: paired cases, folds, means, the mean difference, Wilcoxon's p
    (None with fewer than :data:`MIN_PAIRS_FOR_P` pairs, or when every difference is 0), Holm's p across the
    metrics of that trainer, and for ``lesions_found_<L>`` the total difference with its bootstrap CI."""
    from scipy import stats

    base = values.get(baseline)
    if base is None:
        return []
    out = []
    for trainer, metrics in values.items():
        if trainer == baseline:
            continue
        rows = []
        for metric in sorted(set(metrics) & set(base)):
            cases, a, b, folds = _paired(metrics[metric], base[metric])
            diffs = a - b
            row: dict = {"metric": metric, "n_cases": len(cases), "folds": folds,
                         "mean_trainer": float(a.mean()) if a.size else None,
                         "mean_baseline": float(b.mean()) if b.size else None,
                         "mean_difference": float(diffs.mean()) if diffs.size else None,
                         "p_wilcoxon": None, "p_holm": None}
            if len(cases) < MIN_PAIRS_FOR_P:
                row["no_p"] = f"{len(cases)} paired case(s) < {MIN_PAIRS_FOR_P}"
            elif np.all(diffs == 0):
                row["no_p"] = "every difference is 0"
            else:
                row["p_wilcoxon"] = float(stats.wilcoxon(a, b, alternative="two-sided").pvalue)
            if metric.startswith("lesions_found_"):
                row["total_difference"] = float(diffs.sum())
                ci = _bootstrap_total(diffs)
                row["ci95_total_difference"] = list(ci) if ci else None
            rows.append(row)
        for row, p in zip(rows, holm([r["p_wilcoxon"] for r in rows])):
            row["p_holm"] = p
        out.append({"trainer": trainer, "baseline": baseline, "metrics": rows})
    return out


# ---------------------------------------------------------------------------------------------- output
def machine() -> dict:
    import torch

    from segbalance import __version__

    names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")] \
        if Path("/proc/cpuinfo").exists() else []

    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"cpu": f"{names[0]}, {len(names)} cores" if names else platform.machine(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__, "monai": version("monai"),
            "nnunetv2": version("nnunetv2"), "segbalance": __version__}


def trainer_rows(records: list[dict], labels: dict[int, str], lesion_labels: list[int]) -> list[dict]:
    """Per trainer: folds, cases, voxel Dice per class over cases, and per lesion class lesions found / in
    the ground truth, per size bin, and false positives per case."""
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(r["trainer"], []).append(r)
    rows = []
    for trainer, runs in by.items():
        row: dict = {"trainer": trainer, "folds": sorted(r["fold"] for r in runs), "dice": {}, "lesions": {}}
        cases = {(r["fold"], c["case"]) for r in runs for c in _voxel_rows(r["evaluation"])}
        row["case_scores"] = len(cases)
        row["cases"] = len({c for _, c in cases})
        for lab in labels:
            v = [c["dice"] for r in runs for c in _voxel_rows(r["evaluation"])
                 if c["label"] == lab and _finite(c.get("dice"))]
            row["dice"][str(lab)] = {"mean": float(np.mean(v)) if v else None,
                                     "std": float(np.std(v)) if v else None, "n": len(v)}
        for lab in lesion_labels:
            summ = [s for r in runs for s in r["evaluation"]["lesions.json"]["summary"] if s["label"] == lab]
            per = [c for r in runs for c in r["evaluation"]["lesions.json"]["per_case"] if c["label"] == lab]
            bins = list(summ[0]["by_size"]) if summ else []
            by_size = {}
            for k in bins:
                n_gt = int(sum(s["by_size"][k]["n_gt"] for s in summ))
                tp = int(sum(s["by_size"][k]["tp"] for s in summ))
                by_size[k] = {"n_gt": n_gt, "found": tp, "sensitivity": tp / n_gt if n_gt else None}
            fp = [int(c["fp"]) for c in per]
            n_gt = int(sum(s["n_gt"] for s in summ))
            tp = int(sum(s["tp"] for s in summ))
            row["lesions"][str(lab)] = {"n_gt": n_gt, "found": tp, "sensitivity": tp / n_gt if n_gt else None,
                                        "fp": int(sum(fp)), "fp_per_case": float(np.mean(fp)) if fp else None,
                                        "by_size": by_size}
        rows.append(row)
    return rows


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _p(x) -> str:
    return "—" if x is None else (f"{x:.2g}" if x < 0.001 else f"{x:.3f}")


def _plots(rows: list[dict], labels: dict[int, str], lesion_labels: list[int], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    trainers = [r["trainer"] for r in rows]
    width = 0.8 / max(1, len(trainers))
    # lesion sensitivity per size bin
    for lab in lesion_labels:
        bins = list(rows[0]["lesions"][str(lab)]["by_size"]) if rows else []
        fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(bins) * max(1, len(trainers)) / 2, 3.5))
        for i, r in enumerate(rows):
            bs = r["lesions"][str(lab)]["by_size"]
            ax.bar(np.arange(len(bins)) + i * width, [bs[k]["sensitivity"] or 0 for k in bins], width,
                   label=r["trainer"])
        ax.set_xticks(np.arange(len(bins)) + width * (len(trainers) - 1) / 2)
        ax.set_xticklabels([f"{k}\n(n={rows[0]['lesions'][str(lab)]['by_size'][k]['n_gt']})" for k in bins])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("lesion sensitivity")
        ax.set_title(f"{labels.get(lab, lab)}: lesions found per size bin (mm³)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(folder / f"lesion_sensitivity_by_size_{lab}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    # false positives per case, and voxel Dice per class
    for name, key, ylabel in (("false_positives_per_case", "fp_per_case",
                               "false-positive components per case"),
                              ("dice_per_class", "dice", "voxel Dice (mean over cases)")):
        groups = lesion_labels if key == "fp_per_case" else list(labels)
        fig, ax = plt.subplots(figsize=(2 + 1.2 * len(groups) * max(1, len(trainers)) / 2, 3.5))
        for i, r in enumerate(rows):
            if key == "dice":
                vals = [r["dice"][str(g)]["mean"] or 0 for g in groups]
            else:
                vals = [r["lesions"][str(g)]["fp_per_case"] or 0 for g in groups]
            ax.bar(np.arange(len(groups)) + i * width, vals, width, label=r["trainer"])
        ax.set_xticks(np.arange(len(groups)) + width * (len(trainers) - 1) / 2)
        ax.set_xticklabels([labels.get(g, str(g)) for g in groups])
        ax.set_ylabel(ylabel)
        if key == "dice":
            ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(folder / f"{name}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_report(folder: str | Path, records: list[dict], failures: list[dict], settings: dict,
                 labels: dict[int, str], lesion_labels: list[int], baseline: str, plots: bool = True) -> dict:
    """``report.md``, ``report.json`` and the PNGs in ``folder``; returns the JSON content."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = trainer_rows(records, labels, lesion_labels)
    values = per_case_values(records, list(labels), lesion_labels)
    paired = paired_statistics(values, baseline)
    folds_table = aggregate(records, lesion_labels[-1], {**labels}) if records and lesion_labels else []
    pngs = _plots(rows, labels, lesion_labels, folder) if plots and rows else []
    report = {"settings": settings, "baseline": baseline, "trainers": rows, "paired_vs_baseline": paired,
              "statistics": {"test": "Wilcoxon signed-rank, two-sided (scipy.stats.wilcoxon), per case",
                             "correction": "Holm across the metrics of each trainer's comparison",
                             "min_pairs_for_p": MIN_PAIRS_FOR_P, "bootstrap": BOOTSTRAP,
                             "case_in_several_folds": "mean over the folds both trainers were scored in"},
              "folds_table": folds_table, "failed_runs": failures,
              "plots": [p.name for p in pngs], "machine": machine()}
    atomic_write_text(folder / "report.json", json.dumps(report, indent=1, default=str))
    atomic_write_text(folder / "report.md", report_markdown(report, labels, lesion_labels))
    return report


def _metric_label(metric: str, labels: dict[int, str]) -> str:
    key, _, lab = metric.rpartition("_")
    return f"{key.replace('_', ' ')} ({labels.get(int(lab), lab)})" if lab.isdigit() else metric


def report_markdown(report: dict, labels: dict[int, str], lesion_labels: list[int]) -> str:
    s = report["settings"]
    lines = ["# segbalance compare", "", "## Settings", ""]
    for key, value in s.items():
        lines.append(f"- **{key}**: {value}")
    lines += ["", "## Per trainer", ""]
    head = ["trainer", "folds", "cases"] + [f"Dice {labels[lab]}" for lab in labels]
    for lab in lesion_labels:
        head += [f"{labels[lab]}: found / GT", f"{labels[lab]}: FP per case"]
    lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in report["trainers"]:
        cells = [r["trainer"], ",".join(map(str, r["folds"])), str(r["cases"])]
        cells += [f"{_fmt(r['dice'][str(lab)]['mean'])} ± {_fmt(r['dice'][str(lab)]['std'])}"
                  for lab in labels]
        for lab in lesion_labels:
            les = r["lesions"][str(lab)]
            cells += [f"{les['found']} / {les['n_gt']}", _fmt(les["fp_per_case"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    for lab in lesion_labels:
        rows = report["trainers"]
        if not rows:
            continue
        bins = list(rows[0]["lesions"][str(lab)]["by_size"])
        lines += ["", f"### {labels[lab]}: lesions found per size bin (mm³; found / in the ground truth)", "",
                  "| trainer | " + " | ".join(bins) + " |", "|---|" + "---:|" * len(bins)]
        for r in rows:
            bs = r["lesions"][str(lab)]["by_size"]
            cells = " | ".join(f"{bs[k]['found']} / {bs[k]['n_gt']}" for k in bins)
            lines.append(f"| {r['trainer']} | {cells} |")
    lines += ["", f"## Paired per case against {report['baseline']}", "",
              "Wilcoxon signed-rank (two-sided, scipy) of the per-case differences; Holm's correction "
              "across the metrics of each trainer's comparison; no p-value with fewer than "
              f"{MIN_PAIRS_FOR_P} paired cases or when every difference is 0. A case scored in several "
              "folds (a held-out test set) enters once, as its mean over those folds. Lesions found: the "
              "total difference with a "
              f"bootstrap {BOOTSTRAP['confidence_level']:.0%} CI (cases resampled, "
              f"{BOOTSTRAP['n_resamples']} resamples, {BOOTSTRAP['method']}).", ""]
    if not report["paired_vs_baseline"]:
        lines.append(f"(no comparison: {report['baseline']} has no finished run)")
    for entry in report["paired_vs_baseline"]:
        lines += [f"### {entry['trainer']} − {entry['baseline']}", "",
                  "| metric | cases | folds | trainer | baseline | difference | p (Wilcoxon) | p (Holm) |",
                  "|---|---:|---|---:|---:|---:|---:|---:|"]
        for m in entry["metrics"]:
            diff = _fmt(m["mean_difference"])
            if "total_difference" in m:
                ci = m["ci95_total_difference"]
                diff += f" (total {m['total_difference']:+.0f}" + (
                    f", 95% CI {ci[0]:+.0f} … {ci[1]:+.0f})" if ci else ")")
            p = _p(m["p_wilcoxon"]) if m["p_wilcoxon"] is not None else f"— ({m.get('no_p', '')})"
            lines.append(f"| {_metric_label(m['metric'], labels)} | {m['n_cases']} | "
                         f"{','.join(map(str, m['folds']))} | {_fmt(m['mean_trainer'])} | "
                         f"{_fmt(m['mean_baseline'])} | {diff} | {p} | {_p(m['p_holm'])} |")
        lines.append("")
    if report["failed_runs"]:
        lines += ["## Failed runs", ""]
        for f in report["failed_runs"]:
            lines += [f"- **{f['trainer']} fold {f['fold']}**: {f['step']} failed (exit {f['exit_code']}); "
                      f"log `{f['log']}`", "", "```", f.get("log_tail", ""), "```", ""]
    if report["plots"]:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"
