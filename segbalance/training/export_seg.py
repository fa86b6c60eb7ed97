"""``segbalance export-seg``: label volumes (e.g. nnU-Net predictions) written as DICOM-SEG on their series.

A batch command over :func:`segbalance.io.dicom_seg.write_dicom_seg` (the format itself lives in
:mod:`segbalance.io`); it shares the resume records and report of ``segbalance predict``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["export_seg_folder", "register"]


def export_seg_folder(pred: str | os.PathLike, dicom_root: str | os.PathLike, dst: str | os.PathLike, *,
                      label_map: dict[int, str] | str | None = None, parameters: dict | None = None,
                      overwrite: bool = False):
    """Write each label volume in ``pred`` (e.g. nnU-Net predictions ``<case>.nii.gz``) as
    ``dst/<case>.dcm`` DICOM-SEG on its source series ``dicom_root/<case>/`` (or ``<case>_0000/``; or
    ``dicom_root`` itself when it is one series and ``pred`` holds one volume). The prediction must lie on
    the series' grid (shape, spacing, origin, direction), else an error names both. Returns a
    :class:`~segbalance.training.predict.PredictReport` (failed cases listed, not raised).

    A re-run skips a case whose output exists and whose record ``dst/.segbalance/export-seg/<case>.json``
    (prediction and series size + mtime, label map) still matches; an output this function did not write
    is left alone unless ``overwrite``."""
    from segbalance.atomic import atomic_write_text
    from segbalance.io.dicom import headers_geometry, read_series_headers
    from segbalance.io.dicom_common import parse_name_map
    from segbalance.io.dicom_seg import write_dicom_seg
    from segbalance.io.volumes import read_volume
    from segbalance.preprocessing.pairing import check_geometry, check_label
    from segbalance.training.predict import PredictReport, _fingerprint, find_inputs

    pred, dicom_root, dst = Path(pred), Path(dicom_root), Path(dst)
    if not dicom_root.is_dir():
        raise FileNotFoundError(f"{dicom_root}: DICOM root folder does not exist")
    names = parse_name_map(label_map) if isinstance(label_map, str) else label_map
    inputs = [(cid, p) for cid, p in find_inputs(pred) if p.is_file()]
    if not inputs:
        raise ValueError(f"{pred}: no prediction volume (NIfTI/MHD/NRRD) found")
    report = PredictReport()
    for cid, path in inputs:
        out, marker = dst / f"{cid}.dcm", dst / _EXPORT_STATE / f"{cid}.json"
        try:
            candidates = [dicom_root / cid, dicom_root / f"{cid}_0000"]
            series = next((c for c in candidates if c.is_dir()), None)
            if series is None and len(inputs) == 1:
                series = dicom_root
            if series is None:
                raise ValueError(f"{path}: no DICOM series folder {candidates[0]} for case {cid!r}")
            record = {"prediction": str(path.resolve()), "prediction_fp": _fingerprint(path),
                      "series": str(series.resolve()), "series_fp": _fingerprint(series),
                      "label_map": {str(k): v for k, v in (names or {}).items()}}
            if out.exists() and not overwrite:
                old = _read_record(marker)
                if old is None or old == record:  # up to date, or not ours: never replaced silently
                    report.skipped.append(out)
                    continue
            headers = read_series_headers(series)
            label = read_volume(path)
            reference = headers_geometry(headers, series)
            check_geometry(reference, label)
            array = check_label(label)
            write_dicom_seg(array, series, out, label_map=names, parameters=parameters, headers=headers)
            atomic_write_text(marker, json.dumps(record))
            report.written.append(out)
        except (ValueError, OSError) as exc:
            report.failed.append((cid, " ".join(str(exc).split())))
    return report


_EXPORT_STATE = Path(".segbalance") / "export-seg"


def _read_record(marker: Path) -> dict | None:
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None



def register(subparsers) -> None:
    """``segbalance export-seg PRED DICOM_ROOT OUT --label-map 1=GTV``."""
    e = subparsers.add_parser(
        "export-seg", help="write label volumes (e.g. nnU-Net predictions) as DICOM-SEG on their series",
        description="PRED/<case>.nii.gz -> OUT/<case>.dcm referencing DICOM_ROOT/<case>/ (see docs/dicom.md)",
    )
    e.add_argument("pred", help="folder of label volumes <case>.nii.gz (nnU-Net predictions, ...)")
    e.add_argument("dicom_root", help="folder holding one DICOM series folder per case (<case>/)")
    e.add_argument("output", help="output folder for <case>.dcm")
    e.add_argument("--label-map", default=None, help="value=name list, e.g. 1=GTV,2=Lung_L")
    e.add_argument("--overwrite", action="store_true", help="rewrite existing outputs")
    e.set_defaults(func=_run_export)


def _run_export(args) -> int:
    import sys

    report = export_seg_folder(args.pred, args.dicom_root, args.output, label_map=args.label_map,
                               overwrite=args.overwrite, parameters={"source": "export-seg"})
    print(report.summary(), file=sys.stderr if report.failed else sys.stdout)
    if not report.failed:
        print(f"written to {args.output}")
    return 1 if report.failed else 0
