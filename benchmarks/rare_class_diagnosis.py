"""Why a trainer's lesion class stays off, from the gradient balance its own run recorded per epoch.

Reads the ``segbalance_diagnostics.jsonl`` of each run of ``benchmarks/compare_nnunet.py`` (every run there
records it, see :mod:`segbalance.trainers.diagnostics`) and summarises, per trainer and fold, for the lesion
class (label 2):

* ``switch_on_epoch``: the first epoch whose lesion pseudo-Dice is ≥ 0.1 and stays above 0 in every later
  epoch (``None``: never; a stray positive in the first epochs, before the collapse, does not count);
* ``z_pos``/``z_neg`` at a few epochs: the lesion's mean softmax probability on lesion / other voxels;
* over the saturated phase (epochs 2–10, after the first collapse every loss goes through):
  ``pull_vs_ce`` = mean of ``pull / pull_ce`` (the loss's raise of the lesion logit on a missed lesion voxel
  relative to CE's on the same tensors) and ``background_share`` = Σ max(0, others_pos[bg]) /
  Σ others_pos[lesion] over those epochs (how much of that correction also raises background; ``None``
  where the loss raises the lesion logit by less than 1e-3 of CE's, a ratio of two zeros).

Writes ``benchmarks/results/rare_class_diagnosis.json`` and ``docs/rare-class-diagnosis.png`` (per trainer:
``z_pos`` and the lesion pseudo-Dice against the epoch).

    python benchmarks/rare_class_diagnosis.py --work benchmarks/work/compare_nnunet/cpulong
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASET = "Dataset761_SegBalanceLesions"
LESION = 1  # index of label 2 in the per-foreground-class lists
SATURATED = range(2, 11)
EPOCHS_SHOWN = (0, 1, 2, 5, 10, 20, 40, 59)


def read_rows(path: Path) -> list[dict]:
    from segbalance.trainers.diagnostics import read_diagnostics

    return read_diagnostics(str(path))


def summarise(rows: list[dict]) -> dict:
    dice = [r["pseudo_dice"][LESION] if r.get("pseudo_dice") else None for r in rows]
    on = next((r["epoch"] for i, (r, d) in enumerate(zip(rows, dice))
               if d is not None and d >= 0.1 and all(x is not None and x > 0 for x in dice[i:])), None)
    by_epoch = {r["epoch"]: r for r in rows}
    sat = [by_epoch[e] for e in SATURATED if e in by_epoch and by_epoch[e].get("pull")]

    def share() -> float | None:
        raise_bg = sum(max(0.0, r["others_pos"][LESION][0]) for r in sat)
        raise_lesion = sum(r["others_pos"][LESION][2] for r in sat)
        pull_ce = sum(r["pull_ce"][LESION] for r in sat)
        return raise_bg / raise_lesion if raise_lesion > 1e-3 * pull_ce else None

    def at(key: str) -> dict:
        return {e: by_epoch[e][key][LESION] for e in EPOCHS_SHOWN if e in by_epoch and key in by_epoch[e]}

    pull = [r["pull"][LESION] / r["pull_ce"][LESION] for r in sat]
    return {
        "epochs": len(rows),
        "switch_on_epoch": on,
        "final_pseudo_dice": dice[-1] if dice else None,
        "z_pos": at("z_pos"),
        "z_neg": at("z_neg"),
        "pull_vs_ce": float(np.mean(pull)) if sat else None,
        "background_share": share() if sat else None,
        "series": {"epoch": [r["epoch"] for r in rows], "pseudo_dice": dice,
                   "z_pos": [r.get("z_pos", [None, None])[LESION] for r in rows]},
    }


def plot(summaries: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segbalance.evaluation.report import save_figure

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key, s in sorted(summaries.items()):
        ser = s["series"]
        z = [v if v else np.nan for v in ser["z_pos"]]
        line, = a.semilogy(ser["epoch"], z, label=key)
        dice = [np.nan if v is None else v for v in ser["pseudo_dice"]]
        b.plot(ser["epoch"], dice, color=line.get_color(), label=key)
    a.set_xlabel("epoch")
    a.set_ylabel("mean lesion probability on lesion voxels")
    b.set_xlabel("epoch")
    b.set_ylabel("lesion pseudo-Dice (nnU-Net)")
    b.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="compare_nnunet.py's WORK/<budget> folder")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/rare_class_diagnosis.json")
    ap.add_argument("--png", type=Path, default=ROOT / "docs" / "rare-class-diagnosis.png")
    args = ap.parse_args(argv)
    files = sorted((args.work / "results" / DATASET).glob("*/fold_*/segbalance_diagnostics.jsonl"))
    if not files:
        ap.error(f"--work: no segbalance_diagnostics.jsonl under {args.work / 'results' / DATASET}")
    summaries = {}
    for f in files:
        trainer = f.parent.parent.name.split("__")[0].split("_cmp")[0]
        key = f"{trainer.removeprefix('nnUNetTrainer') or 'nnUNetTrainer'} fold {f.parent.name[5:]}"
        summaries[key] = summarise(read_rows(f))
        s = summaries[key]
        nan = float("nan")
        print(f"{key:<28} on at {s['switch_on_epoch']!s:>5}  pull/CE {_or(s['pull_vs_ce'], nan):6.2f}  "
              f"bg share {_or(s['background_share'], nan):5.2f}  z_pos "
              + " ".join(f"{e}:{v:.1e}" for e, v in s["z_pos"].items()), flush=True)
    args.json.write_text(json.dumps(summaries, indent=1, allow_nan=False, default=str))
    plot(summaries, args.png)
    print(f"wrote {args.json} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
