"""Conversion throughput of ``segbalance convert`` against the I/O floor, measured side by side.

The floor is plain SimpleITK: read every image and label of the source and write it as ``.nii.gz``
(what any converter must at least do). Each converter (nnunet, slices, patches) runs on the same
source into a fresh folder; runs are interleaved (floor, nnunet, slices, patches, floor, ...) and the
ratio of medians is reported. Source: the real CT/MR cases in ``--real`` (default: the cropped copies in
``tests/data/real``; the recorded figures used the full-size pyradiomics cases) written as MHD+RAW
(the typical hospital export), or synthetic volumes when that folder is absent.

Two design checks run beside it, also side by side:

* ``pool_startup``: a fresh process starting a 2-worker pool whose workers import the converter,
  ``spawn`` (segbalance's rule, :func:`segbalance.preprocessing.runs.process_pool`) against ``fork``, and
  the command ``segbalance convert slices`` with ``-j 2`` against ``-j 1`` on the same source;
* ``monai_alternatives``: the slice windowing and resizing of ``convert slices`` (numpy clip, PIL
  bilinear per slice) against MONAI's ``ScaleIntensityRange`` and ``Resize`` on the lung CT, their
  results compared, and the import time of ``monai.transforms`` in a fresh process (each spawned
  worker would pay it).

    python benchmarks/preprocessing.py [--repeats 3] [--out benchmarks/results/preprocessing-cpu.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, median, time_interleaved  # noqa: E402

from segbalance.io.volume import Volume  # noqa: E402
from segbalance.io.volumes import read_volume, write_volume  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_DEFAULT = REPO / "tests" / "data" / "real"


def make_source(root: Path, real_dir: Path) -> tuple[Path, str]:
    """``root/images`` + ``root/labels`` as uncompressed MHD+RAW; returns the folder and a description."""
    real = real_dir if (real_dir / "lung1_image.nrrd").exists() else None
    cases = []
    if real is not None:
        for name in ("lung1", "brain1", "breast1"):
            image, label = read_volume(real / f"{name}_image.nrrd"), read_volume(real / f"{name}_label.nrrd")
            cases.append((name, image, label))
        what = "real pyradiomics cases " + ", ".join(f"{n} {'x'.join(map(str, i.shape[::-1]))}"
                                                     for n, i, _ in cases) + f" from {real} as MHD+RAW"
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


_POOL_CODE = """
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
import segbalance.preprocessing.slices as slices
with ProcessPoolExecutor(2, mp_context=get_context({method!r})) as pool:
    list(pool.map(slices.parse_window, ["ct-lung", "ct-lung"]))  # each worker imports the converter
"""


def pool_startup(method: str) -> None:
    """A fresh Python (light main module, like the ``segbalance`` command) starting a 2-worker pool with
    ``method`` whose workers import the converter. Run in a subprocess: spawn re-imports the parent's
    main module, and this script's imports torch, which no conversion worker needs."""
    subprocess.run([sys.executable, "-c", _POOL_CODE.format(method=method)], check=True)


def cli_slices(src: Path, out: Path, jobs: int) -> None:
    """``segbalance convert slices`` as a user runs it (fresh process, spawned workers for ``jobs > 1``)."""
    subprocess.run([sys.executable, "-m", "segbalance.cli", "convert", "slices", str(src), str(out),
                    "--size", "224,224", "--window", "ct-lung", "-j", str(jobs), "--no-progress"],
                   check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(out)


def _best(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def monai_alternatives(image: np.ndarray, label: np.ndarray, repeats: int) -> dict:
    """Windowing and resizing as ``convert slices`` does them against MONAI's transforms (best of n)."""
    import monai.transforms as mt

    from segbalance.preprocessing.slices import parse_window, resize_slice, window_intensities

    window = parse_window("ct-lung")
    lo, hi = window.bounds(image)
    size = (224, 224)
    t_np, ours = _best(lambda: window_intensities(image, window), repeats)
    scale = mt.ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True, dtype=np.float32)
    t_monai, theirs = _best(lambda: np.asarray(scale(image.astype(np.float32))), repeats)
    t_pil, pil = _best(lambda: np.stack([resize_slice(s, size) for s in ours]), repeats)
    resize = mt.Resize(size, mode="bilinear", anti_aliasing=True)
    t_rs, rs = _best(lambda: np.asarray(resize(ours)), repeats)
    resize_plain = mt.Resize(size, mode="bilinear", anti_aliasing=False)
    t_rs0, rs0 = _best(lambda: np.asarray(resize_plain(ours)), repeats)
    t_lab, lab_pil = _best(lambda: np.stack([resize_slice(s, size, label=True) for s in label]), repeats)
    lab_f = label.astype(np.float32)
    t_lab_m, lab_m = _best(lambda: np.asarray(mt.Resize(size, mode="nearest-exact")(lab_f)), repeats)
    lab_m0 = np.asarray(mt.Resize(size, mode="nearest")(lab_f))
    code = "import time; t = time.perf_counter(); import monai.transforms; print(time.perf_counter() - t)"
    t_import = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout)
    return {
        "volume": list(image.shape), "size": list(size), "window": "ct-lung",
        "seconds_best": {"window_numpy": t_np, "window_monai_ScaleIntensityRange": t_monai,
                         "resize_pil_per_slice": t_pil, "resize_monai_antialiased": t_rs,
                         "resize_monai_no_antialias": t_rs0, "label_resize_pil_nearest": t_lab,
                         "label_resize_monai_nearest_exact": t_lab_m},
        "import_monai_transforms_s": t_import,
        "window_max_abs_difference": float(np.abs(ours - theirs).max()),
        "resize_vs_monai_antialiased_max_abs": float(np.abs(pil - rs).max()),
        "resize_vs_monai_antialiased_mean_abs": float(np.abs(pil - rs).mean()),
        "resize_vs_monai_no_antialias_max_abs": float(np.abs(pil - rs0).max()),
        "label_pixels_differing_nearest_exact": int((lab_pil != lab_m).sum()),
        "label_pixels_differing_nearest": int((lab_pil != lab_m0).sum()),
        "label_foreground_pixels": int((lab_pil > 0).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--real", type=Path, default=REAL_DEFAULT, metavar="DIR",
                        help="{lung1,brain1,breast1}_{image,label}.nrrd (default: tests/data/real)")
    parser.add_argument("--out", type=Path, default=RESULTS / "preprocessing-cpu.json")
    args = parser.parse_args()

    from segbalance.preprocessing.nnunet import convert_to_nnunet
    from segbalance.preprocessing.patches import convert_to_patches
    from segbalance.preprocessing.slices import convert_to_slices

    work = Path(tempfile.mkdtemp(prefix="segbalance-bench-"))
    try:
        src, description = make_source(work / "src", args.real)
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
        pool_jobs = {"pool_2_spawn": lambda: pool_startup("spawn"),
                     "pool_2_fork": lambda: pool_startup("fork"),
                     "cli_slices_j1": lambda: cli_slices(src, fresh(), 1),
                     "cli_slices_j2": lambda: cli_slices(src, fresh(), 2)}
        pools = time_interleaved(pool_jobs, device, repeats=args.repeats, warmup=1)
        lung = args.real if (args.real / "lung1_image.nrrd").exists() else None
        if lung is not None:
            image, label = (read_volume(lung / f"lung1_{k}.nrrd").array for k in ("image", "label"))
        else:
            image = read_volume(src / "images" / "case0.mhd").array
            label = read_volume(src / "labels" / "case0.mhd").array
        monai_cmp = monai_alternatives(image, label, args.repeats)
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
        "pool_startup": {k: {"median": median(v), "all": v} for k, v in pools.items()},
        "monai_alternatives": monai_cmp,
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
    for k, v in pools.items():
        print(f"{k:24s} {median(v):9.3f}")
    print(json.dumps(monai_cmp, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
