"""Cold start of ``segbalance evaluate``: one small case, a fresh Python process per run.

Writes a 16×32×32 NIfTI case (an organ and two lesions, spacing 2.0 × 0.8 × 0.8 mm) and its prediction to a
scratch folder, then runs, interleaved (A B A B …, one warm-up each), ``segbalance evaluate --no-resume``
with all plots and with ``--no-plots``, each in a new interpreter (``python -m segbalance.cli``, from the
scratch folder so the working directory is not on ``sys.path`` ahead of the install). Records every run's
whole-process user + sys CPU time and wall time (``resource.getrusage`` of the children), the peak
resident memory of the largest child so far (this script imports no torch, so the forked child starts
small), the load average before and after, and the medians:

    python benchmarks/evaluate_coldstart.py --repeats 5

Result: ``benchmarks/results/evaluation-coldstart-cpu.json`` (docs/benchmarks-evaluation.md). On a loaded
machine wall time grows with the load and CPU time much less: compare CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

VARIANTS = {"plots": [], "no_plots": ["--no-plots"]}


def write_case(folder: Path) -> None:
    """The ground truth and a prediction that finds one lesion, misses the other (called organ) and adds
    one false-positive voxel, as NIfTI in ``folder/gt`` and ``folder/pred``."""
    import nibabel as nib

    gt = np.zeros((16, 32, 32), np.uint8)
    gt[2:14, 4:28, 4:28] = 1
    gt[5:8, 10:14, 10:14] = 2
    gt[9:11, 20:23, 20:23] = 2
    pred = gt.copy()
    pred[9:11, 20:23, 20:23] = 1
    pred[12, 5, 5] = 2
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    for name, volume in (("gt", gt), ("pred", pred)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(volume.transpose(2, 1, 0), affine), folder / name / "case1.nii.gz")


def run_once(folder: Path, extra: list[str]) -> dict:
    """One cold ``segbalance evaluate`` in a new process; its CPU, wall time and peak memory."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "segbalance.cli", "evaluate", "--gt", "gt", "--pred", "P=pred",
                    "--out", "out", "--no-resume", *extra], cwd=folder, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {"cpu_s": round(user + system, 3), "user_s": round(user, 3), "sys_s": round(system, 3),
            "wall_s": round(wall, 3), "peak_mib": round(after.ru_maxrss / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="counted runs per variant (after one warm-up)")
    ap.add_argument("--json", default="evaluation-coldstart-cpu.json", help="file name in benchmarks/results")
    args = ap.parse_args(argv)
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        write_case(folder)
        for i in range(args.repeats + 1):
            for name, extra in VARIANTS.items():
                record = run_once(folder, extra)
                if i:
                    runs[name].append(record)
                print(f"{name:<9} run {i}{' (warm-up)' if not i else ''}: {record}", flush=True)
    load_after = os.getloadavg()
    median = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
              for name, rs in runs.items()}
    payload = {
        "what": "cold start of `segbalance evaluate --no-resume` on one 16x32x32 NIfTI case (labels 1, 2), "
                "voxel + lesion + per-component metrics, a fresh Python process per run",
        "command": "python -m segbalance.cli evaluate --gt gt --pred P=pred --out out --no-resume "
                   "[--no-plots]",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "repeats": args.repeats,
        "median": median,
        "runs": runs,
    }
    path = RESULTS / args.json
    path.write_text(json.dumps(payload, indent=1) + "\n")
    for name, m in median.items():
        print(f"median {name:<9} CPU {m['cpu_s']:.2f} s  wall {m['wall_s']:.2f} s  "
              f"peak {m['peak_mib']:.0f} MiB")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
