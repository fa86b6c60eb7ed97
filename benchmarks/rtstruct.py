"""RTSTRUCT side by side with rt-utils: reading (rasterizers), reading what rt-utils wrote, and writing.

``read``: rasterizers side by side: segbalance's own (pydicom + numpy) vs rt-utils vs dcmrtstruct2nii.

Each real CT/MR volume (``$SEGBALANCE_REAL_DATA``, default the cropped copies in ``tests/data/real``; the
recorded figures used the full-size pyradiomics cases) is written as an int16 DICOM series twice, axis
aligned and tilted (rotated 10°/-15°/30° and flipped in x, y); its lesion mask and an intensity-threshold
"Body" mask (with holes: lungs, ventricles) are written as RTSTRUCT contours by
:func:`segbalance.io.rtstruct.write_rtstruct`, then rasterized back by each library and
compared with the original masks (Dice per structure, voxels differing) and timed.

rt-utils and dcmrtstruct2nii are not segbalance dependencies; install them anywhere on ``PYTHONPATH``
(``pip install --no-deps --target DIR rt-utils opencv-python-headless dcmrtstruct2nii``). platipy 0.7.2
pins ``pydicom<3`` and cannot be installed beside segbalance's pydicom 3, so it is reported, not run.

``rt-utils-in``: each real lesion (and the Body mask) written by rt-utils' own writer, read back by
segbalance and by rt-utils: Dice against the mask it was made from (the issue-25 case: 0.92-0.95 before
segbalance counted a voxel centre on the contour as inside).

``write``: a noisy prediction (an organ plus thousands of specks, as an undertrained model writes;
512 x 512 x ``--slices``) written as RTSTRUCT by the writer before issue 25 (``_rtstruct_before.py``),
by the current one and by rt-utils, side by side in one run: CPU seconds (``time.process_time``: the
writers are single-threaded and the shared machines are loaded) and wall seconds, bytes, contours, and
the Dice of segbalance's reading of each file against the mask.

    python benchmarks/rtstruct.py [--only read,rt-utils-in,write] [--slices 30]
                                              # -> benchmarks/results/rtstruct-cpu.json
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import torch
from _common import RESULTS, environment
from scipy import ndimage
from scipy.spatial.transform import Rotation

from segbalance.io.dicom import read_dicom_series, write_dicom_series
from segbalance.io.dicom_labels import read_dicom_label
from segbalance.io.rtstruct import rasterize_rtstruct, write_rtstruct
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


def _study_tags() -> dict:
    return {"PatientName": "Doe^Jane", "PatientBirthDate": "19700101", "PatientSex": "F",
            "StudyDate": "20260101", "StudyTime": "120000", "StudyID": "1", "AccessionNumber": "",
            "ReferringPhysicianName": "", "SeriesNumber": 1, "StudyDescription": "",
            "SeriesDescription": "CT"}


def _rt_utils_write(series: Path, masks: dict[str, np.ndarray], path: Path) -> None:
    import contextlib
    import io

    from rt_utils import RTStructBuilder

    rt = RTStructBuilder.create_new(dicom_series_path=str(series))
    for name, mask in masks.items():
        rt.add_roi(mask=np.transpose(mask, (1, 2, 0)), name=name)
    with contextlib.redirect_stdout(io.StringIO()):
        rt.save(str(path))


def rt_utils_in() -> list[dict]:
    """Real masks written by rt-utils (axis-aligned: rt-utils' writer has no tilt issues; square pixels)."""
    rows = []
    for case in ("lung1", "brain1", "breast1"):
        src = read_volume(REAL / f"{case}_image.nrrd")
        lesion = read_volume(REAL / f"{case}_label.nrrd").array > 0
        ct = float(src.array.min()) < -500
        tmp = Path(tempfile.mkdtemp())
        vol = Volume(src.array, src.spacing, (-120.5, 40.25, 17.0))
        write_dicom_series(vol, tmp / "series", rescale_intercept=-1024.0 if ct else 0.0,
                           extra_tags=_study_tags())
        image = read_dicom_series(tmp / "series")
        smooth = ndimage.gaussian_filter(image.array.astype(np.float32), (0, 1.5, 1.5))
        masks = {"GTV": lesion, "Body": smooth > (-400 if ct else np.percentile(smooth, 60))}
        row = {"case": case, "shape": list(image.shape), "spacing": [round(s, 4) for s in image.spacing],
               "writer": "rt-utils", "voxels_GTV": int(lesion.sum())}
        try:
            _rt_utils_write(tmp / "series", masks, tmp / "rt.dcm")
            for reader, fn in (("segbalance", _ours_each), ("rt-utils", _rt_utils)):
                got = fn(tmp / "rt.dcm", tmp / "series", image, list(masks))
                for s, mask in masks.items():
                    if got[s].shape != mask.shape:
                        row[f"{reader}_dice_{s}"] = None
                        continue
                    row[f"{reader}_dice_{s}"] = round(_dice(got[s], mask), 5)
                    row[f"{reader}_lost_{s}"] = int((mask & ~got[s]).sum())
                    row[f"{reader}_extra_{s}"] = int((got[s] & ~mask).sum())
        except ImportError as exc:
            row["error"] = f"not installed: {exc}"
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    return rows


def noisy_prediction(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """An organ plus specks of one to a few voxels (about 7,000 pieces per 512 x 512 slice)."""
    rng = np.random.default_rng(seed)
    _, y, x = np.indices(shape)
    organ = ((y - shape[1] / 2) / (shape[1] / 4)) ** 2 + ((x - shape[2] / 2) / (shape[2] / 3)) ** 2 < 1
    speck = ndimage.gaussian_filter(rng.random(shape).astype(np.float32), (0, 0.7, 0.7)) > 0.62
    return organ | speck


def write(slices: int) -> list[dict]:
    import warnings

    from _rtstruct_before import write_rtstruct_before

    from segbalance.io.dicom import read_series_headers

    tmp = Path(tempfile.mkdtemp())
    shape = (slices, 512, 512)
    write_dicom_series(Volume(np.zeros(shape, np.int16), (3.0, 0.7, 0.7), (-120.5, 40.25, 17.0)),
                       tmp / "series", extra_tags=_study_tags())
    image = read_dicom_series(tmp / "series")
    headers = read_series_headers(tmp / "series")
    mask = noisy_prediction(shape)
    pieces = int(sum(ndimage.label(m)[1] for m in mask))
    writers = {
        "segbalance (before issue 25)": lambda p: write_rtstruct_before({"Pred": mask}, tmp / "series", p,
                                                                        headers=headers),
        "segbalance": lambda p: write_rtstruct({"Pred": mask}, tmp / "series", p, headers=headers),
        "rt-utils": lambda p: _rt_utils_write(tmp / "series", {"Pred": mask}, p),
    }
    rows = []
    for name, fn in writers.items():
        row = {"writer": name, "shape": list(shape), "foreground_voxels": int(mask.sum()),
               "pieces_2d": pieces}
        path = tmp / f"{name.split()[0]}-{len(rows)}.dcm"
        try:
            t, cpu = time.perf_counter(), time.process_time()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fn(path)
            row["cpu_seconds"] = round(time.process_time() - cpu, 2)  # robust to a loaded machine
            row["seconds"] = round(time.perf_counter() - t, 2)
            row["bytes"] = path.stat().st_size
            row["size_warning"] = any("writing an RTSTRUCT of" in str(w.message) for w in caught)
            ds = pydicom.dcmread(path)  # parsed once: counted, then rasterized by segbalance's reader
            row["contours"] = len(ds.ROIContourSequence[0].ContourSequence)
            got = rasterize_rtstruct(ds, image, {1: "Pred"}, path) == 1
            row["dice_read_by_segbalance"] = round(_dice(got, mask), 5)
            row["voxels_differing"] = int((got ^ mask).sum())
        except ImportError as exc:
            row["error"] = f"not installed: {exc}"
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    by = {r["writer"]: r for r in rows if "seconds" in r}
    if "segbalance" in by and "segbalance (before issue 25)" in by:
        old, new = by["segbalance (before issue 25)"], by["segbalance"]
        rows.append({"ratio": "before / now",
                     "cpu_seconds": round(old["cpu_seconds"] / new["cpu_seconds"], 1),
                     "seconds": round(old["seconds"] / new["seconds"], 1),
                     "bytes": round(old["bytes"] / new["bytes"], 2)})
    if "segbalance" in by and "rt-utils" in by:
        ours, theirs = by["segbalance"], by["rt-utils"]
        rows.append({"ratio": "segbalance / rt-utils",
                     "cpu_seconds": round(ours["cpu_seconds"] / theirs["cpu_seconds"], 2),
                     "seconds": round(ours["seconds"] / theirs["seconds"], 2),
                     "bytes": round(ours["bytes"] / theirs["bytes"], 3)})
    return rows


def read() -> list[dict]:
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
    return results


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="read,rt-utils-in,write",
                        help="comma list of read, rt-utils-in, write")
    parser.add_argument("--slices", type=int, default=30, help="slices of the noisy prediction (write)")
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    out = RESULTS / "rtstruct-cpu.json"
    previous = json.loads(out.read_text()) if out.is_file() else {}
    record = {k: v for k, v in previous.items() if k != "results"}
    if "results" in previous:  # the reading table of the earlier layout, with the environment it ran in
        record["read"], record["environment_read"] = previous["results"], previous.get("environment")
    env = environment(torch.device("cpu"))
    for part in parts:
        record[part] = {"read": read, "rt-utils-in": rt_utils_in, "write": lambda: write(args.slices)}[part]()
        record[f"environment_{part}"] = env
    env.update({"rt-utils": _version("rt-utils"), "dcmrtstruct2nii": _version("dcmrtstruct2nii"),
                "opencv": _version("opencv-python-headless"), "pydicom": _version("pydicom"),
                "scikit-image": _version("scikit-image")})
    RESULTS.mkdir(exist_ok=True)
    record.pop("environment", None)
    out.write_text(json.dumps(record, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
