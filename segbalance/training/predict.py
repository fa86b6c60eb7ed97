"""Inference with a model trained by :func:`segbalance.training.train`: one volume, a folder, the CLI.

3D models: MONAI ``sliding_window_inference`` over the whole volume (patch = training patch size, 50 %
overlap, Gaussian blending). 2D models: each axial slice resized to the training size, predicted, and the
logits resized back before the argmax. Mixed precision (``torch.autocast``) on CUDA, float32 elsewhere.

:func:`predict_folder` (``segbalance predict``) reads NIfTI/MHD/NRRD files or DICOM series with
:func:`~segbalance.io.volumes.read_volume`, predicts on the input's own grid (no resampling; the
model trains at native spacing too) and writes label volumes with the input's spacing, origin and
direction as NIfTI (``<case>.nii.gz``), DICOM-SEG or RTSTRUCT (``<case>.dcm``, referencing the source
series). With ``jobs >= 1`` the next input is read and the previous prediction written in threads while the
model runs.
A re-run skips cases whose output exists and whose source (an MHD's data file included) and checkpoint
(size + mtime) are unchanged; the record is ``DST/.segbalance/predict/<case>.json``. A bad case does not
stop the run: failures are listed at the end (exit code 1).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segbalance.atomic import atomic_write_text

__all__ = ["predict_volume", "predict_folder", "find_inputs", "PredictReport", "register"]

FORMATS = {"nifti": ".nii.gz", "dicom-seg": ".dcm", "rtstruct": ".dcm", "nrrd": ".nrrd", "mha": ".mha"}
DICOM_FORMATS = ("dicom-seg", "rtstruct")
STATE = Path(".segbalance") / "predict"


def _normalise(image: np.ndarray, info: dict):
    import torch

    from segbalance.training.data import intensity_transform

    try:
        transform = intensity_transform(info["ct"], info.get("window"))
    except TypeError:  # older data module: intensity_transform(ct)
        transform = intensity_transform(info["ct"])
    return torch.as_tensor(transform({"image": image.astype(np.float32)})["image"]).float()


def predict_volume(model, info: dict, image: np.ndarray, batch_size: int = 16, *, amp: bool | None = None,
                   overlap: float = 0.5, progress: bool = False) -> np.ndarray:
    """Label map (z, y, x) uint8 of ``image`` ((z, y, x) or (1, z, y, x)) from a trained model.

    ``info`` is the checkpoint's info (:func:`~segbalance.training.model.load_model`): dim, size, ct.
    ``amp``: autocast on CUDA (default: on for CUDA, always off elsewhere).
    """
    import torch
    import torch.nn.functional as F
    from monai.inferers import sliding_window_inference

    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be (z, y, x) or (1, z, y, x), got shape {image.shape}")
    device = next(model.parameters()).device
    use_amp = device.type == "cuda" and (amp is None or bool(amp))
    model.eval()
    with torch.inference_mode(), torch.autocast(device.type, enabled=use_amp):
        x = _normalise(image, info).to(device)
        if info["dim"] == 3:
            logits = sliding_window_inference(
                x[None], roi_size=tuple(info["size"]), sw_batch_size=batch_size, predictor=model,
                overlap=overlap, mode="gaussian", progress=progress,
            )
            out = logits.argmax(1)[0]
        else:
            slices = x[0][:, None]  # (z, 1, y, x)
            parts = []
            for i in range(0, slices.shape[0], batch_size):
                s = slices[i : i + batch_size]
                small = F.interpolate(s, size=tuple(info["size"]), mode="bilinear", align_corners=False)
                logits = F.interpolate(model(small).float(), size=s.shape[-2:], mode="bilinear",
                                       align_corners=False)
                parts.append(logits.argmax(1))
            out = torch.cat(parts)
    return out.to(torch.uint8).cpu().numpy()


# ------------------------------------------------------------------------------------------------ inputs


def find_inputs(src: str | os.PathLike) -> list[tuple[str, Path]]:
    """``[(case id, path)]`` of the volumes to predict under ``src``.

    ``src`` is a volume file, a DICOM series folder, a folder of volume files and/or DICOM series
    sub-folders, or a dataset root (``images/`` + ``labels/``, ``imagesTr``/``imagesTs``), whose test cases
    (images without a label) are taken. A ``_0000`` channel suffix is dropped from the case id. The case id
    is the file or sub-folder name; a DICOM series given on its own is named from its headers
    (:func:`segbalance.io.naming.case_output_name`: ``<PatientID>_<StudyDate>_<SeriesDescription>`` or the
    series UID), never after its folder.
    """
    from segbalance.io.volumes import VOLUME_EXTENSIONS, case_id
    from segbalance.preprocessing.pairing import _split_channel, find_cases

    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src}: input does not exist")
    if src.is_file():
        return [(_split_channel(case_id(src))[0], src)]
    if any((src / d).is_dir() for d in ("images", "imagesTr", "imagesTs")):
        out = []
        for case in find_cases(src):
            if case.split != "test":
                continue
            if len(case.images) != 1:
                raise ValueError(f"{case.images[0]}: case {case.case_id!r} has {len(case.images)} channels; "
                                 "the model takes one")
            out.append((case.case_id, case.images[0]))
        return out
    entries = [e for e in sorted(src.iterdir()) if not e.name.startswith(".")]
    volumes = [e for e in entries if e.is_file() and e.name.lower().endswith(VOLUME_EXTENSIONS)
               and not e.name.lower().endswith(".dcm")]
    folders = [e for e in entries if e.is_dir()]
    dicom_files = [e for e in entries if e.is_file() and e not in volumes]
    if not volumes and not folders and dicom_files:  # src is itself one DICOM series: named from its headers
        from segbalance.io.naming import case_output_name

        return [(case_output_name(src), src)]
    out = [(_split_channel(case_id(p))[0], p) for p in volumes + folders]
    seen: dict[str, Path] = {}
    for cid, p in out:
        if cid in seen:
            raise ValueError(f"{p}: case id {cid!r} also given by {seen[cid]}; one input per case")
        seen[cid] = p
    return out


def _fingerprint(path: Path) -> list:
    """Size + mtime of a file and of its data file (an MHD's ``.raw``, a detached NRRD's), or file count +
    total size + newest mtime of a folder (:func:`~segbalance.io.volumes.source_files`)."""
    from segbalance.io.volumes import source_files

    try:
        files = [f.stat() for f in source_files(path)]
    except OSError as exc:  # a vanished data file: never equal to a record; the read reports it
        return ["<unreadable>", str(exc)]
    if path.is_file():
        return [v for st in files for v in (st.st_size, st.st_mtime_ns)]
    return [len(files), sum(s.st_size for s in files), max((s.st_mtime_ns for s in files), default=0)]


def _recorded_source(dst: Path, cid: str) -> str | None:
    try:
        return json.loads((dst / STATE / f"{cid}.json").read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None


def _distinct_outputs(inputs: list[tuple[str, Path]], dst: Path, ext: str,
                      overwrite: bool) -> list[tuple[str, Path]]:
    """``inputs`` with each case id made unique in ``dst``: a name another input of this run already took,
    or whose output exists and belongs to another source (its record names another input; without a record
    it is not ours, kept unless ``overwrite``), gets ``_<suffix>``
    (:func:`~segbalance.io.naming.unique_suffix`), so no case's output replaces another's."""
    from segbalance.io.naming import unique_suffix

    taken: set[str] = set()
    out = []
    for cid, path in inputs:
        source = str(path.resolve())
        recorded = _recorded_source(dst, cid)
        exists = (dst / f"{cid}{ext}").exists()
        foreign = exists and (recorded != source if recorded is not None else not overwrite)
        if cid in taken or foreign:
            cid = f"{cid}_{unique_suffix(path)}"
        taken.add(cid)
        out.append((cid, path))
    return out


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (case, one-line error)
    timings: dict = field(default_factory=lambda: {"read": 0.0, "model": 0.0, "write": 0.0, "wall": 0.0})

    def summary(self) -> str:
        text = f"{len(self.written)} predicted, {len(self.skipped)} already done, {len(self.failed)} failed"
        for case, error in self.failed:
            text += f"\n  {case}: {error}"
        return text


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def predict_folder(
    checkpoint: str | os.PathLike,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    fmt: str = "nifti",
    device: str | None = None,
    jobs: int = 1,
    batch_size: int = 4,
    amp: bool | None = None,
    overlap: float = 0.5,
    label_map: dict[int, str] | str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> PredictReport:
    """Predict every input under ``src`` (see :func:`find_inputs`) into ``dst/<case><ext>``.

    Args:
        checkpoint: ``last.pt`` of ``segbalance train``.
        fmt: ``nifti`` (``.nii.gz``, default), ``nrrd``, ``mha``, or for DICOM series inputs ``dicom-seg`` or
            ``rtstruct`` (``<case>.dcm``; one ROI per label value, contours around the voxel centres).
        jobs: I/O threads reading ahead / writing behind the model (0: everything in order, no threads).
        label_map: ``{value: name}`` for DICOM-SEG segment / RTSTRUCT ROI names (default ``label_<v>``).
        overwrite: predict again even where a finished output is recorded.

    Returns a :class:`PredictReport`; failed cases are listed there, not raised.

    Raises:
        ValueError / FileNotFoundError: bad checkpoint, ``src``, ``fmt``, or ``dst`` inside ``src``.
    """
    from tqdm.auto import tqdm

    from segbalance.io.dicom_common import parse_name_map
    from segbalance.training.model import load_model

    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if jobs < 0:
        raise ValueError(f"jobs must be >= 0, got {jobs}")
    checkpoint, src, dst = Path(checkpoint), Path(src), Path(dst)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint does not exist")
    inputs = find_inputs(src)
    if not inputs:
        raise ValueError(f"{src}: no input volume (NIfTI/MHD/NRRD file or DICOM series folder) found")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise ValueError(f"{dst}: the output folder must not be inside the input {src}")
    names = parse_name_map(label_map) if isinstance(label_map, str) else label_map
    if fmt in DICOM_FORMATS:
        not_dicom = [str(p) for _, p in inputs if not p.is_dir()]
        if not_dicom:
            raise ValueError(f"{not_dicom[0]}: --format {fmt} needs DICOM series inputs (folders); "
                             "use --format nifti for NIfTI/MHD/NRRD inputs")
    ext = FORMATS[fmt]
    model, info = load_model(checkpoint, _device(device))
    ckpt_fp = _fingerprint(checkpoint)
    report = PredictReport()
    todo = []
    for cid, path in _distinct_outputs(inputs, dst, ext, overwrite):
        out = dst / f"{cid}{ext}"
        record = {"source": str(path.resolve()), "source_fp": _fingerprint(path),
                  "checkpoint": str(checkpoint.resolve()), "checkpoint_fp": ckpt_fp, "format": fmt,
                  "label_map": {str(k): v for k, v in (names or {}).items()}}
        marker = dst / STATE / f"{cid}.json"
        if not overwrite and out.exists() and marker.exists():
            try:
                if json.loads(marker.read_text()) == record:
                    report.skipped.append(out)
                    continue
            except (OSError, json.JSONDecodeError):
                pass
        todo.append((cid, path, out, marker, record))
    parameters = {"loss": str(info.get("loss", "")), "checkpoint": checkpoint.name}

    def read(path: Path):
        from segbalance.io.volumes import read_volume

        t = time.perf_counter()
        volume = read_volume(path)
        if volume.array.ndim != 3:
            raise ValueError(f"{path}: expected a 3D volume, got shape {volume.shape}")
        headers = None
        if fmt in DICOM_FORMATS:
            from segbalance.io.dicom import read_series_headers

            headers = read_series_headers(path)
        return volume, headers, time.perf_counter() - t

    def write(path: Path, volume, headers, label: np.ndarray, out: Path, marker: Path, record: dict) -> float:
        t = time.perf_counter()
        if fmt == "dicom-seg":
            from segbalance.io.dicom_seg import write_dicom_seg

            write_dicom_seg(label, path, out, label_map=names, parameters=parameters, headers=headers)
        elif fmt == "rtstruct":
            from segbalance.io.rtstruct import write_rtstruct

            values = sorted(v for v in (names or {}) if v) or sorted(
                int(v) for v in np.unique(label) if v) or [1]
            unknown = sorted(set(int(v) for v in np.unique(label) if v) - set(values))
            if unknown:
                raise ValueError(f"{out}: predicted label values {unknown} are not in the label map {names}")
            masks = {(names or {}).get(v, f"label_{v}"): label == v for v in values}
            write_rtstruct(masks, path, out, headers=headers, label=f"segbalance {parameters['loss']}"[:16],
                           progress=progress)
        else:
            from segbalance.io.volumes import write_volume

            write_volume(volume.with_array(label), out)
        atomic_write_text(marker, json.dumps(record))
        return time.perf_counter() - t

    def one_line(exc: BaseException) -> str:
        return " ".join(str(exc).split()) or type(exc).__name__

    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="predict", disable=not progress)
    pool = ThreadPoolExecutor(max_workers=jobs) if jobs > 0 else None

    def submit(fn, *args) -> Future:
        if pool is not None:
            return pool.submit(fn, *args)
        f: Future = Future()
        try:
            f.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 (handed to the caller through the future)
            f.set_exception(exc)
        return f

    reads: deque[Future] = deque()
    ahead = max(1, jobs)
    for item in todo[:ahead]:
        reads.append(submit(read, item[1]))
    writes: list[tuple[str, Future]] = []
    try:
        for i, (cid, path, out, marker, record) in enumerate(todo):
            if i + ahead < len(todo):
                reads.append(submit(read, todo[i + ahead][1]))
            try:
                volume, headers, seconds = reads.popleft().result()
                report.timings["read"] += seconds
                t = time.perf_counter()
                label = predict_volume(model, info, volume.array, batch_size=batch_size, amp=amp,
                                       overlap=overlap)
                report.timings["model"] += time.perf_counter() - t
            except (ValueError, OSError, RuntimeError) as exc:
                report.failed.append((cid, one_line(exc)))
                bar.update(1)
                continue
            writes.append((cid, submit(write, path, volume, headers, label, out, marker, record)))
            del volume, label
            bar.update(1)
        for cid, future in writes:
            try:
                report.timings["write"] += future.result()
                report.written.append(dst / f"{cid}{ext}")
            except (ValueError, OSError, RuntimeError) as exc:
                report.failed.append((cid, one_line(exc)))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True)
    report.timings["wall"] = time.perf_counter() - start
    return report


# ----------------------------------------------------------------------------------------------- command


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict", help="label volumes from a segbalance train checkpoint (NIfTI or DICOM-SEG out)",
        description="Predict NIfTI/MHD/NRRD files or DICOM series with a segbalance train checkpoint; "
        "outputs keep the input's geometry. Finished cases are skipped on a re-run (source and checkpoint "
        "unchanged). See docs/dicom.md.",
    )
    p.add_argument("checkpoint", help="last.pt written by segbalance train")
    p.add_argument("input", help="a volume, a DICOM series folder, a folder of them, or a dataset root "
                                 "(its test cases)")
    p.add_argument("output", help="output folder (<case>.nii.gz or <case>.dcm)")
    p.add_argument("--format", default="nifti", choices=sorted(FORMATS), help="output format (default nifti)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="I/O threads beside the model (default 1)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--batch-size", type=int, default=4, help="sliding-window patches per forward pass")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (default 0.5)")
    p.add_argument("--label-map", default=None,
                   help="value=name list for DICOM-SEG segments / RTSTRUCT ROIs, e.g. 1=lesion")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--overwrite", action="store_true", help="predict again even where finished")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    report = predict_folder(
        args.checkpoint, args.input, args.output, fmt=args.format, device=args.device, jobs=args.jobs,
        batch_size=args.batch_size, amp=False if args.no_amp else None, overlap=args.overlap,
        label_map=args.label_map, overwrite=args.overwrite, progress=not args.no_progress,
    )
    from segbalance.preprocessing.runs import report_exit_code

    return report_exit_code(report, args.output)
