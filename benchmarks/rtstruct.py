"""RTSTRUCT rasterizers side by side: segbalance's own (pydicom + skimage) vs rt-utils vs dcmrtstruct2nii.

Each real CT/MR volume (``$SEGBALANCE_REAL_DATA``, default the cropped copies in ``tests/data/real``; the
recorded figures used the full-size pyradiomics cases) is written as an int16 DICOM series twice, axis
aligned and tilted (rotated 10°/-15°/30° and flipped in x, y); its lesion mask and an intensity-threshold
"Body" mask (with holes: lungs, ventricles) are written as RTSTRUCT contours by
:func:`segbalance.io.rtstruct.write_rtstruct`, then rasterized back by each library and
compared with the original masks (Dice per structure, voxels differing) and timed.

rt-utils and dcmrtstruct2nii are not segbalance dependencies; install them anywhere on ``PYTHONPATH``
(``pip install --no-deps --target DIR rt-utils opencv-python-headless dcmrtstruct2nii``). platipy 0.7.2
pins ``pydicom<3`` and cannot be installed beside segbalance's pydicom 3, so it is reported, not run.

    python benchmarks/rtstruct.py            # -> benchmarks/results/rtstruct-cpu.json
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, environment
from scipy import ndimage
from scipy.spatial.transform import Rotation

from segbalance.io.dicom import read_dicom_series, write_dicom_series
from segbalance.io.dicom_labels import read_dicom_label
from segbalance.io.rtstruct import write_rtstruct
from segbalance.io.volume import Volume
from segbalance.io.volumes import read_volume

REAL = Path(os.environ.get("SEGBALANCE_REAL_DATA", Path(__file__).resolve().parents[1] / "tests/data/real"))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def _ours(rt: Path, series: Path, image: Volume, names: list[str]) -> dict[str, np.ndarray]:
    label = read_dicom_label(rt, image, {i + 1: n for i, n in enumerate(names)}).array
    return {n: label == i + 1 for i, n in enumerate(names)}


def _ours_each(rt: Path, series: Path, image: Volume, names: list[str]) -> dict[str, np.ndarray]:
    return {n: read_dicom_label(rt, image, {1: n}).array == 1 for n in names}  # no overlap rule involved


def _rt_utils(rt: Path, series: Path, image: Volume, names: list[str]) -> dict[str, np.ndarray]:
    from rt_utils import RTStructBuilder

    rtstruct = RTStructBuilder.create_from(dicom_series_path=str(series), rt_struct_path=str(rt))
    return {n: np.transpose(rtstruct.get_roi_mask_by_name(n), (2, 0, 1)) for n in names}  # (r, c, s)


def _dcmrtstruct2nii(rt: Path, series: Path, image: Volume, names: list[str]) -> dict[str, np.ndarray]:
    import contextlib
    import io

    from dcmrtstruct2nii import dcmrtstruct2nii

    out = Path(tempfile.mkdtemp())
    with contextlib.redirect_stdout(io.StringIO()):
        dcmrtstruct2nii(str(rt), str(series), str(out), structures=names, convert_original_dicom=False)
    return {n: read_volume(out / f"mask_{n}.nii.gz").array > 0 for n in names}


RASTERIZERS = {"segbalance": _ours_each, "rt-utils": _rt_utils, "dcmrtstruct2nii": _dcmrtstruct2nii}


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main() -> None:
    results = []
    for case in ("lung1", "brain1", "breast1"):
        src = read_volume(REAL / f"{case}_image.nrrd")
        lesion = read_volume(REAL / f"{case}_label.nrrd").array > 0
        ct = float(src.array.min()) < -500
        for orientation in ("axis-aligned", "tilted"):
            direction = np.eye(3) if orientation == "axis-aligned" else (
                Rotation.from_euler("xyz", [10, -15, 30], degrees=True).as_matrix() @ np.diag([-1.0, -1, 1]))
            tmp = Path(tempfile.mkdtemp())
            vol = Volume(src.array, src.spacing, (-120.5, 40.25, 17.0), direction.ravel())
            write_dicom_series(vol, tmp / "series", rescale_intercept=-1024.0 if ct else 0.0)
            image = read_dicom_series(tmp / "series")
            smooth = ndimage.gaussian_filter(image.array.astype(np.float32), (0, 1.5, 1.5))
            masks = {"GTV": lesion, "Body": smooth > (-400 if ct else np.percentile(smooth, 60))}
            write_rtstruct(masks, tmp / "series", tmp / "rt.dcm")
            for name, fn in RASTERIZERS.items():
                row = {"case": case, "orientation": orientation, "shape": list(image.shape),
                       "spacing": [round(s, 4) for s in image.spacing], "rasterizer": name}
                try:
                    t = time.perf_counter()
                    got = fn(tmp / "rt.dcm", tmp / "series", image, list(masks))
                    row["seconds"] = round(time.perf_counter() - t, 3)
                    for s, mask in masks.items():
                        g = got[s]
                        if g.shape != mask.shape:
                            row[f"dice_{s}"] = None
                            row[f"note_{s}"] = f"shape {g.shape}"
                            continue
                        row[f"dice_{s}"] = round(_dice(g, mask), 5)
                        row[f"diff_voxels_{s}"] = int((g ^ mask).sum())
                except ImportError as exc:
                    row["error"] = f"not installed: {exc}"
                except Exception as exc:  # a library failing on valid input is a result too
                    row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                results.append(row)
                print(json.dumps(row), file=sys.stderr)
    env = environment(torch.device("cpu"))
    env.update({"rt-utils": _version("rt-utils"), "dcmrtstruct2nii": _version("dcmrtstruct2nii"),
                "opencv": _version("opencv-python-headless"), "pydicom": _version("pydicom"),
                "scikit-image": _version("scikit-image")})
    out = RESULTS / "rtstruct-cpu.json"
    RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps({"environment": env, "results": results}, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
