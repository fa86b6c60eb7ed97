"""Export paired volumes as an nnU-Net v2 raw dataset.

Layout written (nnU-Net v2 ``dataset_format.md``)::

    DST/DatasetXXX_Name/imagesTr/<case>_0000<file_ending>   one file per channel
    DST/DatasetXXX_Name/labelsTr/<case><file_ending>
    DST/DatasetXXX_Name/imagesTs/<case>_0000<file_ending>   cases without a label
    DST/DatasetXXX_Name/dataset.json                        channel_names, labels, numTraining, file_ending

nnU-Net has no reader for ``.mhd`` (and forcing ``SimpleITKIO`` on it loses the ``.raw`` data files when
nnU-Net copies images around), so every case is written in one ``file_ending``: ``.nii.gz`` (default)
or ``.mha``/``.nrrd``. Label values are remapped to the consecutive integers nnU-Net requires: with a
label map ``0=background,1=organ,255=lesion`` the source value 255 becomes 2; without one, the source
values must already be ``0..K-1`` and are named ``label_<k>``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from segbalance.errors import UserError
from segbalance.labels import present_labels
from segbalance.preprocessing.pairing import Case, CaseError, load_case
from segbalance.preprocessing.runs import (
    CaseOutputs,
    ConversionReport,
    NewFolders,
    OutputFolder,
    find_source_cases,
    prepare_destination,
    run_cases,
)

__all__ = ["parse_label_map", "dataset_folder_name", "convert_case_to_nnunet", "convert_to_nnunet",
           "channel_names_from_modality"]

NNUNET_FILE_ENDINGS = (".nii.gz", ".mha", ".nrrd", ".nii")


def parse_label_map(text: str | None) -> dict[int, str] | None:
    """``"0=background,1=organ,2=lesion"`` -> ``{0: "background", 1: "organ", 2: "lesion"}``: the
    ``VALUE=NAME`` syntax of every ``--label-map``
    (:func:`~segbalance.io.dicom_common.parse_name_map`), plus nnU-Net's rules: names unique,
    background value 0 named."""
    from segbalance.io.dicom_common import parse_name_map

    if text is None or text == "":
        return None
    out = parse_name_map(text)
    if len(set(out.values())) != len(out):
        raise ValueError(f"--label-map {text!r}: duplicate names")
    if 0 not in out:
        raise ValueError(f"--label-map {text!r} must name the background value 0")
    return out


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"dataset_id must be in 1..999, got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ValueError(f"dataset name {name!r} may only hold letters, digits, '_' and '-'")
    return f"Dataset{int(dataset_id):03d}_{name}"


def channel_names_from_modality(cases: list[Case], n_channels: int) -> list[str]:
    """nnU-Net channel names from the images themselves: a DICOM channel is named by its series'
    ``Modality`` (``CT``, ``MR``, ``PT``, ...), the same in every case. A channel of NIfTI/MHD/NRRD files
    carries no modality: a single channel is ``CT`` (segbalance's earlier default) with a warning, several
    are ``channel_<i>``. nnU-Net normalises a channel named ``CT`` with the dataset's intensity
    percentiles and every other one per image (z-score), so the name matters.

    Raises:
        UserError: the cases' series disagree on a channel's modality (pass ``--channel-names``).
    """
    import warnings

    from segbalance.io.dicom import series_modality

    names = []
    for i in range(n_channels):
        found: dict[str, str] = {}
        for case in cases:
            modality = series_modality(case.images[i])
            if modality is not None:
                found.setdefault(modality, case.case_id)
        if len(found) > 1:
            listing = ", ".join(f"{m} (e.g. case {c})" for m, c in sorted(found.items()))
            raise UserError(f"channel {i}: the DICOM series have different modalities: {listing}; name the "
                            "channels with --channel-names")
        if found:
            names.append(next(iter(found)))
        elif n_channels == 1:
            warnings.warn("channel 0 named 'CT': NIfTI/MHD/NRRD images carry no modality; pass "
                          "--channel-names MR (or the right name) if they are not CT, since nnU-Net "
                          "normalises a 'CT' channel by the dataset's intensity percentiles",
                          UserWarning, stacklevel=3)
            names.append("CT")
        else:
            names.append(f"channel_{i}")
    return names


def _label_dtype(n_labels: int) -> type:
    return np.uint8 if n_labels <= 255 else np.uint16


def convert_case_to_nnunet(case: Case, out: CaseOutputs, file_ending: str,
                           label_map: dict[int, str] | None) -> dict:
    """Read, check and write one case through ``out``; returns the label values found, split, channels."""
    known = set(label_map) if label_map else None
    images, label = load_case(case, known)
    img_dir = "imagesTr" if case.split == "train" else "imagesTs"
    for channel, image in enumerate(images):
        out.write_volume(f"{img_dir}/{case.case_id}_{channel:04d}{file_ending}", image)
    values: list[int] = []
    if label is not None:
        arr = label.array
        values = [int(v) for v in present_labels(arr)]
        if label_map:
            lut = np.zeros(max(label_map) + 1, dtype=np.int64)
            for new, old in enumerate(sorted(label_map)):
                lut[old] = new
            arr = lut[arr]
        elif values and values[-1] > 255 * 255:
            raise CaseError(f"{case.label}: label value {values[-1]} too large; give a label map")
        n = len(label_map) if label_map else (values[-1] + 1 if values else 1)
        label = label.with_array(arr.astype(_label_dtype(n)))
        out.write_volume(f"labelsTr/{case.case_id}{file_ending}", label)
    return {"label_values": values, "split": case.split, "n_channels": len(images)}


def convert_to_nnunet(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    dataset_id: int,
    name: str,
    *,
    channel_names: list[str] | None = None,
    label_map: str | dict[int, str] | None = None,
    file_ending: str = ".nii.gz",
    jobs: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionReport:
    """Convert the cases under ``src`` into ``dst/DatasetXXX_Name`` (nnU-Net v2 raw format).

    Args:
        src: source folder (``images/`` + ``labels/`` or ``imagesTr/`` + ``labelsTr/``).
        dst: the ``nnUNet_raw`` folder (or any folder) to create the dataset in.
        dataset_id, name: make ``DatasetXXX_Name``.
        channel_names: one name per image channel (default: :func:`channel_names_from_modality`).
        label_map: ``{source_value: name}`` or ``"0=background,1=organ,2=lesion"``.
        file_ending: ``.nii.gz`` (default), ``.mha``, ``.nrrd`` or ``.nii``.
        jobs: worker processes; overwrite: rewrite finished cases and accept a foreign ``dst``.

    Returns a :class:`ConversionReport`; ``dataset.json`` is written only when no case failed.
    """
    if file_ending not in NNUNET_FILE_ENDINGS:
        raise ValueError(f"file_ending must be one of {NNUNET_FILE_ENDINGS}, got {file_ending!r} "
                         "(nnU-Net cannot read .mhd; use .nii.gz or .mha)")
    lmap = parse_label_map(label_map) if isinstance(label_map, str) or label_map is None else dict(label_map)
    folder = dataset_folder_name(dataset_id, name)
    cases = find_source_cases(src, lmap)
    n_channels = {len(c.images) for c in cases}
    if len(n_channels) != 1:
        raise ValueError(f"{src}: cases have different channel counts {sorted(n_channels)}")
    n_ch = n_channels.pop()
    if channel_names is None:
        channel_names = channel_names_from_modality(cases, n_ch)
    if len(channel_names) != n_ch:
        raise ValueError(f"channel_names {channel_names} must have one name per channel ({n_ch})")
    with NewFolders(dst, Path(dst) / folder) as made:
        prepare_destination(dst, [src])
        config = {"converter": "nnunet", "dataset": folder, "file_ending": file_ending, "label_map": lmap,
                  "channel_names": channel_names}
        with OutputFolder(Path(dst) / folder, config, overwrite=overwrite, source=src) as out:
            report = run_cases(cases, convert_case_to_nnunet, out, jobs=jobs, desc=f"nnunet {folder}",
                               progress=progress, file_ending=file_ending, label_map=lmap)
            made.keep = bool(report.done)
            if report.failed:  # a dataset.json of an earlier run would describe cases that are gone
                out.remove_run_file("dataset.json")
                return report
            meta = _dataset_json(report, src, name, lmap, channel_names, file_ending)
            out.write_run_file("dataset.json", json.dumps(meta, indent=2))
    return report


def _dataset_json(report: ConversionReport, src: str | os.PathLike, name: str, lmap: dict[int, str] | None,
                  channel_names: list[str], file_ending: str) -> dict:
    """nnU-Net's ``dataset.json`` for the converted cases."""
    train = [r for r in report.results if r.record and r.record.get("split") == "train"]
    if lmap:
        labels = {name_: new for new, (_, name_) in enumerate(sorted(lmap.items()))}
    else:
        seen = sorted({v for r in train for v in r.record["label_values"]} | {0})
        if seen != list(range(len(seen))):
            raise UserError(f"{src}: label values {seen} are not consecutive 0..K-1; pass a label map "
                             "(e.g. --label-map 0=background,1=organ,2=lesion) to remap them")
        labels = {("background" if v == 0 else f"label_{v}"): v for v in seen}
    return {
        "channel_names": {str(i): n for i, n in enumerate(channel_names)},
        "labels": labels,
        "numTraining": len(train),
        "file_ending": file_ending,
        "name": name,
        "description": f"converted from {Path(src).resolve()} by segbalance convert nnunet",
    }
