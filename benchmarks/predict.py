"""``segbalance predict`` on a 512×512×100 CT: time in reading, writing vs the model's own inference.

The CT is the real lung1 volume (512×512×48, 0.57×0.57×5 mm) stacked to 100 slices, written as an int16
DICOM series (RescaleIntercept −1024) and as NIfTI. The model is the ``segbalance train --dim 3``
default UNet (channels 16, 32, 64, 128; patch 32×64×64; 2 classes) with random weights: inference time
does not depend on the weights. For each input/output pair :func:`predict_folder` records the seconds
spent reading (DICOM/NIfTI → HU array), in the model (intensity window + sliding window + argmax) and
writing (NIfTI ``.nii.gz`` or DICOM-SEG). There is no resampling: prediction runs on the input grid.
``io_over_model`` = (read + write) / model; the target is ≤ 1.5. With ``-j 1`` the next read and the
previous write overlap the model, so the wall time of several cases approaches the model time alone.

    python benchmarks/predict.py [--cases 2] [--device cpu]   # -> benchmarks/results/predict-<device>.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, environment

from segbalance.io.dicom import write_dicom_series
from segbalance.io.volume import Volume
from segbalance.io.volumes import read_volume, write_volume
from segbalance.training.checkpoint import save_checkpoint
from segbalance.training.engine import build_model
from segbalance.training.predict import predict_folder

REAL_DEFAULT = Path(__file__).resolve().parents[1] / "tests" / "data" / "real"


def ct_512x512x100(real: Path) -> Volume:
    """The real lung CT repeated to 100 slices and tiled in-plane to 512×512 (the cropped test copy is
    128×128; the full-size pyradiomics case is 512×512 already)."""
    src = read_volume(real / "lung1_image.nrrd")
    reps = [1 + (512 - 1) // n for n in src.array.shape[1:]]
    array = np.tile(src.array, (1 + 99 // src.array.shape[0], *reps))[:100, :512, :512]
    return Volume(array, src.spacing, src.origin, src.direction)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2, help="copies of the CT to predict (default 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--real", type=Path, default=REAL_DEFAULT, metavar="DIR",
                        help="folder with lung1_image.nrrd (default: tests/data/real)")
    args = parser.parse_args()
    device = torch.device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="segbalance-predict-bench-"))
    ct = ct_512x512x100(args.real)
    info = {"loss": "ce", "loss_kwargs": {}, "dim": 3, "size": [32, 64, 64], "channels": [16, 32, 64, 128],
            "num_classes": 2, "ct": True}
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp / "last.pt", {"model": build_model(3, 2, (16, 32, 64, 128)).state_dict(),
                                             "info": info})
    t = time.perf_counter()
    for i in range(args.cases):
        write_dicom_series(ct, tmp / "dicom" / f"ct{i}", rescale_intercept=-1024.0)
        write_volume(ct, tmp / "nifti" / f"ct{i}.nii.gz")
    print(f"inputs written in {time.perf_counter() - t:.1f} s", flush=True)
    runs = []
    for name, src, fmt in (("nifti -> nifti", "nifti", "nifti"), ("dicom -> nifti", "dicom", "nifti"),
                           ("dicom -> dicom-seg", "dicom", "dicom-seg")):
        report = predict_folder(ckpt, tmp / src, tmp / f"out-{src}-{fmt}", fmt=fmt, device=args.device,
                                jobs=args.jobs, progress=False)
        assert not report.failed, report.summary()
        tm = {k: round(v, 3) for k, v in report.timings.items()}
        io = tm["read"] + tm["write"]
        row = {"run": name, "cases": args.cases, "jobs": args.jobs, **tm,
               "read_per_case": round(tm["read"] / args.cases, 3),
               "model_per_case": round(tm["model"] / args.cases, 3),
               "write_per_case": round(tm["write"] / args.cases, 3),
               "io_over_model": round(io / tm["model"], 4),
               "wall_over_model": round(tm["wall"] / tm["model"], 4)}
        runs.append(row)
        print(json.dumps(row), flush=True)
    env = environment(device)
    out = RESULTS / f"predict-{device.type}.json"
    RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps({"environment": env, "volume": {"shape_zyx": list(ct.shape),
                                                              "spacing_zyx": list(ct.spacing)},
                               "model": info, "runs": runs}, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"written {out}")


if __name__ == "__main__":
    main()
