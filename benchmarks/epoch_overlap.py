"""Per-epoch cost of trainers from nnU-Net's own training logs, for runs that trained at the same time.

Two runs that share a machine see the same load only while both train; this compares, for every pair of
logs, the median ``Epoch time`` of each over the epochs that fall in their common time window (at least 10
each). Logs: ``compare_nnunet.py``'s ``WORK/<setting>/logs/train_<trainer>_<fold>.txt``.

    python benchmarks/epoch_overlap.py --logs '/work/cmp/*/logs/train_*.txt'   # → results/epoch-overlap.json
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import statistics
import sys
from datetime import datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
EPOCH = re.compile(r"^(\S+ \S+): Epoch time: ([0-9.]+) s")


def read_epochs(path: str) -> list[tuple[float, float]]:
    """(timestamp, epoch seconds) of every ``Epoch time`` line of one nnU-Net training log."""
    rows = []
    for line in open(path, errors="replace"):
        m = EPOCH.match(line)
        if m:
            stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            rows.append((stamp, float(m.group(2))))
    return rows


def overlaps(logs: dict[str, list[tuple[float, float]]], min_epochs: int = 10) -> list[dict]:
    """Median epoch time of both runs of every pair over their common time window, and the ratio."""
    names, out = sorted(logs), []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            lo = max(logs[a][0][0], logs[b][0][0])
            hi = min(logs[a][-1][0], logs[b][-1][0])
            ea = [d for t, d in logs[a] if lo <= t <= hi]
            eb = [d for t, d in logs[b] if lo <= t <= hi]
            if len(ea) >= min_epochs and len(eb) >= min_epochs:
                ma, mb = statistics.median(ea), statistics.median(eb)
                out.append({"a": a, "b": b, "a_epoch_s": ma, "b_epoch_s": mb, "epochs": [len(ea), len(eb)],
                            "a_over_b": ma / mb})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--logs", required=True, help="glob of nnU-Net training logs")
    ap.add_argument("--json", type=Path, default=RESULTS / "epoch-overlap.json")
    args = ap.parse_args(argv)
    logs = {}
    for f in sorted(glob.glob(args.logs)):
        rows = read_epochs(f)
        if rows:
            logs[f"{Path(f).parent.parent.name}:{Path(f).stem.removeprefix('train_')}"] = rows
    pairs = overlaps(logs)
    for p in pairs:
        print(f"{p['a']:42s} {p['a_epoch_s']:6.2f} s | {p['b']:42s} {p['b_epoch_s']:6.2f} s | "
              f"ratio {p['a_over_b']:.3f} ({p['epochs'][0]}/{p['epochs'][1]} epochs)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"logs": sorted(logs), "pairs": pairs}, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
