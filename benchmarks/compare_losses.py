"""The papers' loss comparison on synthetic phantoms: per loss, seeds -> mean ± std Dice/IoU/HD95/NSD.

Each seed writes its own phantoms (train and held-out test), trains a MONAI UNet on 2D slices (the Dual
Focal protocol) with every loss under the same budget and evaluates per class (organ, lesion) with
:func:`segbalance.demo.case_metrics` (voxel metrics of :mod:`segbalance.evaluation.metrics`, and lesions
found: connected components matched one-to-one at IoU >= 0.5, :mod:`segbalance.evaluation.lesions`).
Writes ``benchmarks/results/compare_losses.json`` and ``docs/results.md`` (machine, versions, budget, table).
Resumable: finished runs are kept under ``--work``.

    python benchmarks/compare_losses.py --quick          # CPU budget (about 15-25 min on 2 busy cores)
    python benchmarks/compare_losses.py --demo-budget    # the demo's budget: 80² slices, 36 epochs (~40 min)
    python benchmarks/compare_losses.py                  # full budget (GPU recommended, CUDA used if present)
    python benchmarks/compare_losses.py --quick --n-lesions 6   # several lesions per phantom, sizes spread
    python benchmarks/compare_losses.py --demo-budget --variant 'gdl_zero=gdl:{"absent_weight": "zero"}'

``--variant NAME=LOSS:JSON`` (repeatable) trains registered loss ``LOSS`` with constructor kwargs ``JSON``
under the row name ``NAME``; given variants, only they run unless ``--losses`` is also given.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LOSSES = ["ce", "wce", "dce", "focal", "gdl", "dfl", "recall", "ce_l1", "ce_kl", "dice_ce", "gdl_boundary"]
LABELS = {
    "ce": "CE",
    "wce": "WCE",
    "dce": "DCE",
    "focal": "Focal",
    "gdl": "GDL",
    "dfl": "DFL",
    "recall": "Recall CE",
    "ce_l1": "CE+L1",
    "ce_kl": "CE+KL",
    "dice_ce": "Dice+CE",
    "gdl_boundary": "GDL+Boundary",
}


def machine() -> dict:
    import monai
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        cpu = f"{names[0]}, {len(names)} cores" if names else cpu
    return {
        "device": gpu or f"CPU ({cpu}, torch threads {torch.get_num_threads()})",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "platform": platform.platform(),
    }


def budget(quick: bool, gpu: bool, demo: bool = False) -> dict:
    if demo:  # the demo's CPU budget (segbalance.demo), long enough for the lesion to be learned
        from segbalance.demo import _budget

        return _budget(tiny=False, gpu=False)
    if gpu and not quick:
        return dict(
            n_train=24,
            n_test=8,
            shape=(48, 128, 128),
            size=(128, 128),
            channels=(32, 64, 128, 256),
            epochs=60,
            batch_size=16,
            steps_per_epoch=None,
        )
    if quick:
        return dict(
            n_train=4,
            n_test=2,
            shape=(16, 64, 64),
            size=(64, 64),
            channels=(8, 16, 32),
            epochs=25,
            batch_size=8,
            steps_per_epoch=None,
        )
    return dict(
        n_train=16,
        n_test=6,
        shape=(40, 96, 96),
        size=(96, 96),
        channels=(16, 32, 64, 128),
        epochs=40,
        batch_size=8,
        steps_per_epoch=None,
    )


def aggregate(per_seed: dict[str, list[list[dict]]]) -> list[dict]:
    """Mean ± std over seeds per (loss, class, metric) (NaN seeds left out); ``missed`` cases and the lesion
    counts (GT lesions, found, false positives) summed over seeds, ``lesion_sensitivity`` = found / GT."""
    out = []
    for loss, seeds in per_seed.items():
        for cls in dict.fromkeys(r["class"] for r in seeds[0]):
            row = {"loss": loss, "class": cls}
            for m in ("dice", "iou", "hd95", "nsd"):
                vals = np.array([next(r[m] for r in rows if r["class"] == cls) for rows in seeds], float)
                fin = vals[np.isfinite(vals)]
                row[m] = (float(fin.mean()), float(fin.std())) if fin.size else (math.nan, math.nan)
            row["missed"] = int(sum(next(r["missed"] for r in rows if r["class"] == cls) for rows in seeds))
            for k in ("lesions_gt", "lesions_found", "lesions_fp"):
                row[k] = int(sum(next(r.get(k, 0) for r in rows if r["class"] == cls) for rows in seeds))
            found, gt = row["lesions_found"], row["lesions_gt"]
            row["lesion_sensitivity"] = found / gt if gt else math.nan
            out.append(row)
    return out


def markdown(rows: list[dict], info: dict) -> str:
    def fmt(v, digits=3):
        return "n/a" if not math.isfinite(v[0]) else f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"

    lines = [
        "| loss | class | Dice | IoU | HD95 (mm) | NSD (2 mm) | missed | lesions found | FP lesions |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {LABELS.get(r['loss'], r['loss'])} | {r['class']} | {fmt(r['dice'])} | {fmt(r['iou'])} | "
            f"{fmt(r['hd95'], 1)} | {fmt(r['nsd'])} | {r['missed']} | "
            f"{r['lesions_found']}/{r['lesions_gt']} | {r['lesions_fp']} |"
        )
    return "\n".join(lines)


def parse_variant(spec: str) -> tuple[str, tuple[str, dict]]:
    """``"NAME=LOSS:JSON"`` -> ``(NAME, (LOSS, kwargs))``; ``"NAME=LOSS"`` means no kwargs."""
    name, sep, rest = spec.partition("=")
    loss, _, kw = rest.partition(":")
    if not sep or not name or not loss:
        raise ValueError(f"--variant wants NAME=LOSS:JSON, got {spec!r}")
    kwargs = json.loads(kw) if kw.strip() else {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"--variant {spec!r}: the kwargs must be a JSON object")
    return name, (loss, kwargs)


def main(argv: list[str] | None = None) -> int:
    import torch

    from segbalance.demo import run_demo
    from segbalance.monai_losses import names

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CPU-sized budget")
    ap.add_argument(
        "--demo-budget", action="store_true", help="the demo CPU budget: 80² slices, 36 epochs"
    )
    ap.add_argument("--epochs", type=int, default=None, help="override the budget's epochs")
    ap.add_argument("--n-lesions", type=int, default=None,
                    help="lesions per phantom (default 1; more: a spread of sizes, see segbalance.synthetic)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--losses", nargs="+", default=None, help=f"registered loss names (default {LOSSES})")
    ap.add_argument(
        "--variant", action="append", default=[], metavar="NAME=LOSS:JSON",
        help="train loss LOSS with kwargs JSON (a JSON object) under the row name NAME (repeatable)",
    )
    ap.add_argument(
        "--work",
        default=str(Path(tempfile.gettempdir()) / "segbalance_compare_losses"),
        help="phantoms and checkpoints (outside the repository; reused on a rerun)",
    )
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "compare_losses.json"))
    ap.add_argument("--markdown", default=None, help="write the table here (docs/results.md updates by hand)")
    args = ap.parse_args(argv)

    known = set(names())
    try:
        variants = dict(parse_variant(v) for v in args.variant)
    except ValueError as exc:
        ap.error(str(exc))
    requested = args.losses if args.losses is not None else ([] if variants else LOSSES)
    losses = [name for name in requested if name in known]
    skipped = [name for name in requested if name not in known]
    bad = sorted(name for name, (loss, _) in variants.items() if loss not in known or name in losses)
    if bad:
        ap.error(f"variants with an unknown loss or a name clashing with --losses: {bad}")
    if not losses and not variants:
        ap.error(f"none of the requested losses is registered: {requested}")
    if skipped:
        print(f"not registered in this build, skipped: {', '.join(skipped)}", file=sys.stderr)
    b = budget(args.quick, torch.cuda.is_available(), args.demo_budget)
    if args.epochs:
        b["epochs"] = args.epochs
    if args.n_lesions:
        b["n_lesions"] = args.n_lesions
    per_seed: dict[str, list[list[dict]]] = {name: [] for name in [*losses, *variants]}
    t0 = time.time()
    for seed in args.seeds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = run_demo(
                Path(args.work) / f"seed{seed}", tuple(losses), seed=seed, budget=b, progress=False
            ) if losses else []
            for name, (loss, kwargs) in variants.items():  # own folder: runs/<loss> would clash
                vrows = run_demo(
                    Path(args.work) / f"variant_{name}" / f"seed{seed}", (loss,), seed=seed, budget=b,
                    progress=False, loss_kwargs={loss: kwargs},
                )
                rows += [{**r, "loss": name} for r in vrows]
        for name in per_seed:
            per_seed[name].append([r for r in rows if r["loss"] == name])
        print(f"seed {seed} done ({time.time() - t0:.0f} s)", file=sys.stderr)
    table = aggregate(per_seed)
    info = {
        "machine": machine(),
        "budget": b,
        "seeds": args.seeds,
        "skipped": skipped,
        "wall_s": round(time.time() - t0, 1),
        "command": " ".join(["python", *sys.argv]),
    }
    if variants:
        info["variants"] = {name: {"loss": lo, "kwargs": kw} for name, (lo, kw) in variants.items()}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"info": info, "rows": table}, indent=1, default=list))
    md = markdown(table, info)
    if args.markdown:
        Path(args.markdown).write_text(md + "\n")
    print(json.dumps(info, indent=1, default=list))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
