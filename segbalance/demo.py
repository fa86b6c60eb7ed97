"""``segbalance demo``: phantoms -> train with several losses -> which loss finds the lesions, and Dice.

With no arguments: writes CT-like phantoms (label 1 organ, 2 lesions: several per phantom, of varied sizes,
together < 1 % of voxels), trains a small MONAI UNet on 2D slices with CE, DFL as in the paper and the DFL
form that learns the lesions through nnU-Net (``dfl_dc``, ρ = 2; docs/rare-class.md) for a short budget (a
few minutes on a 2-core CPU, a larger budget on a GPU), evaluates the held-out phantoms and writes
``results.csv`` (per loss and class: Dice, IoU, HD95, NSD, lesions found / missed / false positive),
``results.png`` (the metrics) and ``lesions.png`` (one test slice per loss with the found, missed and
false-positive lesions outlined in green, red and amber) under ``--out`` (default ``./segbalance_demo``).
Runs are resumable: finished losses are kept in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path

import numpy as np

__all__ = ["register", "run_demo", "case_metrics", "DEFAULT_LOSSES", "DEFAULT_LOSS_KWARGS", "METRICS"]

#: CE, DFL as the paper has it, and the DFL form the 3D comparison recommends (docs/rare-class.md)
DEFAULT_LOSSES = ("ce", "dfl", "dfl_dc")
#: constructor arguments of the default losses (``dfl_dc`` as ``nnUNetTrainerDFLDC`` has it)
DEFAULT_LOSS_KWARGS = {"dfl_dc": {"rho": 2.0}}
METRICS = ("dice", "iou", "hd95", "nsd")
LESION_COUNTS = ("lesions_gt", "lesions_found", "lesions_missed", "lesions_fp")
CLASS_NAMES = {1: "organ", 2: "lesion"}
NSD_TOLERANCE_MM = 2.0


def case_metrics(
    pred: np.ndarray, label: np.ndarray, spacing: tuple[float, ...], num_classes: int = 3
) -> dict:
    """Per foreground class of one (z, y, x) label map: Dice, IoU, HD95 (mm), NSD (2 mm), the flag, and the
    lesion counts (GT lesions, found, false-positive components).

    Voxel metrics are :func:`segbalance.evaluation.evaluate_case` (MONAI semantics; a class missing from the
    prediction scores Dice 0 and HD95 = the image diagonal, see docs/evaluation.md); lesion counts are
    :func:`segbalance.evaluation.evaluate_lesions` (26-connected components, one-to-one IoU >= 0.5 matching).
    """
    from segbalance.evaluation import evaluate_case, evaluate_lesions

    labels = list(range(1, num_classes))
    out = {}
    for m in evaluate_case(pred, label, spacing, labels=labels, nsd_tolerance=NSD_TOLERANCE_MM):
        out[m.label] = {"dice": float(m.dice), "iou": float(m.iou), "hd95": float(m.hd95),
                        "nsd": float(m.nsd), "flag": m.flag}
    for c in evaluate_lesions(pred, label, spacing, labels=labels, nsd_tolerance=NSD_TOLERANCE_MM).classes:
        out[c["label"]].update(lesions_gt=c["n_gt"], lesions_found=c["tp"], lesions_missed=c["fn"],
                               lesions_fp=c["fp"])
    return out


def summarise(per_case: list[dict]) -> dict:
    """Per class: mean of each metric over cases (NaN where undefined, i.e. ``both_empty``, left out),
    ``missed`` = cases whose prediction lacks a class present in the ground truth, and the lesion counts
    summed over cases."""
    summary = {}
    for k in per_case[0]:
        row = {}
        for m in METRICS:
            vals = np.array([c[k][m] for c in per_case], float)
            row[m] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
        row["missed"] = int(sum(c[k]["flag"] == "missed" for c in per_case))
        for n in LESION_COUNTS:
            row[n] = int(sum(c[k][n] for c in per_case))
        summary[k] = row
    return summary


def _budget(tiny: bool, gpu: bool) -> dict:
    if tiny:
        return dict(
            n_train=3,
            n_test=1,
            n_lesions=2,
            shape=(16, 48, 48),
            size=(48, 48),
            channels=(4, 8, 16),
            epochs=1,
            batch_size=4,
            steps_per_epoch=2,
        )
    if gpu:
        return dict(
            n_train=24,
            n_test=6,
            n_lesions=4,
            shape=(48, 128, 128),
            size=(128, 128),
            channels=(32, 64, 128, 256),
            epochs=40,
            batch_size=16,
            steps_per_epoch=None,
        )
    return dict(
        n_train=10,
        n_test=4,
        n_lesions=4,
        shape=(32, 80, 80),
        size=(80, 80),
        channels=(8, 16, 32, 64),
        epochs=36,  # 12 epochs never found the lesion (Dice 0); 36 do (0.4-0.46), ~1 min per loss
        batch_size=8,
        steps_per_epoch=None,
    )


def run_demo(
    out: str | Path = "segbalance_demo",
    losses: tuple[str, ...] = DEFAULT_LOSSES,
    tiny: bool = False,
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    loss_kwargs: dict | None = None,
    dim: int = 2,
    budget: dict | None = None,
) -> list[dict]:
    """Run the demo; returns the table rows (loss, class, metric means) also written to ``results.csv``.

    Losses not registered in this build are skipped with a warning. ``budget`` overrides the default data and
    training budget (keys of ``_budget``: n_train, n_test, shape, size, channels, epochs, batch_size, ...).
    """
    import torch

    from segbalance.atomic import atomic_write_text
    from segbalance.evaluation.outcomes import busiest_slice, lesion_outcomes, plot_lesion_outcomes
    from segbalance.evaluation.report import write_csv
    from segbalance.io.volumes import read_volume
    from segbalance.monai_losses import names
    from segbalance.synthetic import write_phantom_dataset
    from segbalance.training import TrainConfig, load_checkpoint, load_model, predict_volume, train

    out = Path(out)
    b = {**_budget(tiny, torch.cuda.is_available()), **(budget or {})}
    if epochs is not None:
        b["epochs"] = int(epochs)
    loss_kwargs = DEFAULT_LOSS_KWARGS if loss_kwargs is None else loss_kwargs
    known = set(names())
    unknown = [name for name in losses if name not in known]
    for name in unknown:
        warnings.warn(
            f"loss {name!r} is not registered in this build; skipped (known: {sorted(known)})", stacklevel=2
        )
    losses = tuple(name for name in losses if name in known)
    if not losses:
        raise ValueError(f"losses: none of the requested losses is registered; known: {sorted(known)}")
    train_root, test_root = out / "data" / "train", out / "data" / "test"
    lesions = int(b.get("n_lesions", 1))
    write_phantom_dataset(train_root, b["n_train"], seed=seed, shape=b["shape"], n_lesions=lesions)
    write_phantom_dataset(test_root, b["n_test"], seed=seed + 10_000, shape=b["shape"], n_lesions=lesions)
    test_cases = sorted((test_root / "images").glob("*.nii.gz"))
    # the slice the lesion figure shows: the test case and slice that cut the most lesions
    labels = {p.name: read_volume(test_root / "labels" / p.name).array for p in test_cases}
    shown = max(test_cases, key=lambda p: _lesion_count(labels[p.name]))
    shown_image = read_volume(shown)
    outcomes = {}
    rows = []
    for name in losses:
        run_dir = out / "runs" / name
        size = b["size"] if dim == 2 else (16, 48, 48)
        cfg = TrainConfig(
            out=str(run_dir),
            data=str(train_root),
            loss=name,
            loss_kwargs=loss_kwargs.get(name, {}),
            dim=dim,
            size=size,
            channels=b["channels"],
            epochs=b["epochs"],
            batch_size=b["batch_size"],
            steps_per_epoch=b["steps_per_epoch"],
            seed=seed,
            progress=progress,
        )
        last = run_dir / "last.pt"
        done = last.exists() and load_checkpoint(last)["epoch"] + 1 >= b["epochs"]
        if not done:
            cfg.resume = last.exists()
            train(cfg)
        model, info = load_model(last)
        per_case = []
        for path in test_cases:
            image = read_volume(path)
            label = labels[path.name]
            pred = predict_volume(model, info, image.array)
            per_case.append(case_metrics(pred, label, image.spacing))
            if path == shown:
                outcomes[name] = lesion_outcomes(pred, label, 2)
        for k, row in summarise(per_case).items():
            rows.append({"loss": name, "class": CLASS_NAMES.get(k, str(k)), **row})
    write_csv(out / "results.csv", rows, fields=["loss", "class", *METRICS, "missed", *LESION_COUNTS])
    _plot(rows, out / "results.png")
    z = busiest_slice(labels[shown.name], 2)
    plot_lesion_outcomes(shown_image.array, outcomes, z, out / "lesions.png", shown_image.spacing,
                         title=f"{shown.name.split('.')[0]}, slice {z}: lesions found (green), missed (red), "
                         "false positive (amber)")
    atomic_write_text(out / "budget.json", json.dumps({**b, "losses": list(losses), "seed": seed}, indent=1))
    return rows


def _lesion_count(label: np.ndarray) -> int:
    from segbalance.evaluation.lesions import connected_components

    return connected_components(label == 2)[1]


def format_table(rows: list[dict]) -> str:
    """The demo's table: per loss the lesions found / missed / false positive (of the GT lesions) next to
    the metric means per class and the cases that miss a class entirely."""
    head = (f"{'loss':<14}{'class':<8}{'lesions found/missed/FP':>25}" + "".join(f"{m:>9}" for m in METRICS)
            + f"{'cases missed':>14}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lesions = f"{r['lesions_found']}/{r['lesions_missed']}/{r['lesions_fp']} of {r['lesions_gt']}"
        lines.append(
            f"{r['loss']:<14}{r['class']:<8}{lesions:>25}"
            + "".join(f"{r[m]:>9.3f}" for m in METRICS)
            + f"{r['missed']:>14d}"
        )
    return "\n".join(lines)


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segbalance.evaluation.report import save_figure

    losses = list(dict.fromkeys(r["loss"] for r in rows))
    classes = list(dict.fromkeys(r["class"] for r in rows))
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.2))
    width = 0.8 / len(losses)
    for ax, m in zip(axes, METRICS):
        for i, loss in enumerate(losses):
            vals = [next(r[m] for r in rows if r["loss"] == loss and r["class"] == c) for c in classes]
            ax.bar(np.arange(len(classes)) + i * width, np.nan_to_num(vals), width, label=loss)
        ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes)
        ax.set_title(m + (" (mm, lower better)" if m == "hd95" else ""))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="phantoms -> train CE, DFL, DFL+Dice -> lesions found and Dice/IoU/HD95/NSD",
        description=__doc__.splitlines()[2].strip() if __doc__ else None,
    )
    p.add_argument("--out", default="segbalance_demo", help="output folder (default ./segbalance_demo)")
    p.add_argument("--losses", nargs="+", default=list(DEFAULT_LOSSES),
                   help="registered loss names (default: ce, dfl and dfl_dc with rho=2)")
    p.add_argument("--epochs", type=int, default=None, help="override the training budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dim", type=int, choices=(2, 3), default=2)
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke configuration")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    rows = run_demo(
        args.out, tuple(args.losses), tiny=args.tiny, epochs=args.epochs, seed=args.seed, dim=args.dim
    )
    print(format_table(rows))
    out = Path(args.out)
    print(f"wrote {out / 'results.csv'}, {out / 'results.png'} and {out / 'lesions.png'}")
    return 0
