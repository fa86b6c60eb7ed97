"""Conversion throughput of ``segbalance convert`` against the I/O floor, measured side by side.

The floor is plain SimpleITK: read every image and label of the source and write it as ``.nii.gz``
(what any converter must at least do). Each converter (nnunet, slices, patches) runs on the same
source into a fresh folder; runs are interleaved (floor, nnunet, slices, patches, floor, ...) and the
ratio of medians is reported. Source: the real CT/MR cases in ``shared/data/real`` written as MHD+RAW
(the typical hospital export), or synthetic volumes when that folder is absent.

    python benchmarks/preprocessing.py [--repeats 3] [--out benchmarks/results/preprocessing-cpu.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, median, time_interleaved  # noqa: E402

from segbalance.preprocessing.io import Volume, read_volume, write_volume  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_CANDIDATES = [REPO.parent / "shared" / "data" / "real", Path("/work/shared/data/real")]


def make_source(root: Path) -> tuple[Path, str]:
    """``root/images`` + ``root/labels`` as uncompressed MHD+RAW; returns the folder and a description."""
    real = next((p for p in REAL_CANDIDATES if (p / "lung1_image.nrrd").exists()), None)
    cases = []
    if real is not None:
        for name in ("lung1", "brain1", "breast1"):
            image, label = read_volume(real / f"{name}_image.nrrd"), read_volume(real / f"{name}_label.nrrd")
            cases.append((name, image, label))
        what = "real pyradiomics cases lung1 (512x512x48 CT), brain1 (256x256x25 MR), breast1 as MHD+RAW"
    else:
        rng = np.random.default_rng(0)
        for i in range(3):
            img = rng.normal(0, 200, (48, 256, 256)).astype(np.int16)
            lab = np.zeros(img.shape, np.uint8)
            lab[20:24, 100:110, 100:110] = 1
            v = Volume(img, (2.5, 0.8, 0.8))
            cases.append((f"case{i}", v, v.with_array(lab)))
        what = "3 synthetic 256x256x48 int16 volumes as MHD+RAW"
    for name, image, label in cases:
        write_volume(image, root / "images" / f"{name}.mhd", compress=False)
        write_volume(label, root / "labels" / f"{name}.mhd", compress=False)
    n_voxels = sum(int(np.prod(img.shape)) for _, img, _ in cases)
    return root, f"{what}; {n_voxels / 1e6:.1f} M image voxels"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "preprocessing-cpu.json")
    args = parser.parse_args()

    from segbalance.preprocessing.nnunet import convert_to_nnunet
    from segbalance.preprocessing.patches import convert_to_patches
    from segbalance.preprocessing.slices import convert_to_slices

    work = Path(tempfile.mkdtemp(prefix="segbalance-bench-"))
    try:
        src, description = make_source(work / "src")
        files = sorted((src / "images").glob("*.mhd")) + sorted((src / "labels").glob("*.mhd"))
        counter = iter(range(10**6))

        def fresh() -> Path:
            out = work / f"out{next(counter)}"
            return out

        def floor() -> None:
            out = fresh()
            out.mkdir()
            for f in files:
                sitk.WriteImage(sitk.ReadImage(str(f)), str(out / f"{f.parent.name}_{f.stem}.nii.gz"), True)
            shutil.rmtree(out)

        def nnunet() -> None:
            out = fresh()
            report = convert_to_nnunet(src, out, 1, "Bench", label_map="0=background,1=lesion",
                                       progress=False)
            assert not report.failed, report.summary()
            shutil.rmtree(out)

        def slices() -> None:
            out = fresh()
            report = convert_to_slices(src, out, size=(224, 224), window="ct-lung", fmt="png8",
                                       progress=False)
            assert not report.failed, report.summary()
            shutil.rmtree(out)

        def patches() -> None:
            out = fresh()
            report = convert_to_patches(src, out, patch_size=(16, 96, 96), n_patches=16, fg_share=0.5,
                                        progress=False)
            assert not report.failed, report.summary()
            shutil.rmtree(out)

        device = torch.device("cpu")
        times = time_interleaved({"floor_sitk_read_write": floor, "nnunet": nnunet, "slices": slices,
                                  "patches": patches}, device, repeats=args.repeats, warmup=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    floor_s = median(times["floor_sitk_read_write"])
    result = {
        "benchmark": "preprocessing conversion vs SimpleITK read+write floor",
        "environment": environment(torch.device("cpu")),
        "source": description,
        "repeats": args.repeats,
        "seconds": {k: {"median": median(v), "all": v} for k, v in times.items()},
        "ratio_to_floor": {k: median(v) / floor_s for k, v in times.items()},
        "settings": {"nnunet": "file_ending .nii.gz, label map 0=background,1=lesion",
                     "slices": "axial, 224x224, ct-lung window, png8",
                     "patches": "random, 16 per case, 16x96x96, fg_share 0.5, NPZ uncompressed"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"source: {description}")
    print(f"{'job':24s} {'median s':>9s} {'x floor':>8s}")
    for k, v in times.items():
        print(f"{k:24s} {median(v):9.3f} {median(v) / floor_s:8.2f}")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
