"""Score maps for the detection metrics: float probability or detection maps (NIfTI, NRRD, MHA/MHD) and
nnU-Net's ``.npz`` from ``--save_probabilities``, matched to the ground truth by case id.

This reader lives in ``evaluation/`` until the ``segbalance.io`` package owns every format (DESIGN.md §9);
it will move there with a re-export.

* A volume file holds the score of one class (a single channel), read with its geometry, which must match
  the ground truth's (``check_geometry``).
* An nnU-Net ``.npz`` holds ``probabilities`` of shape ``(C, *spatial)`` in nnU-Net's array order, which for
  its default reader (``SimpleITKIO``: ``.nii.gz``, ``.nrrd``, ``.mha``) is segbalance's ``(z, y, x)``;
  channel ``c`` is the probability of label ``c`` (label-based datasets). The file has no geometry: its shape
  must equal the ground truth's, and the ground truth's spacing is used.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def score_files_by_case(folder: str | os.PathLike) -> dict[str, Path]:
    """``{case id: path}`` of the score maps in ``folder``: the ``.npz`` files if there are any (an nnU-Net
    output folder also holds the label maps, which are not scores), else the volume files."""
    from segbalance.io.volumes import VOLUME_EXTENSIONS, case_id

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"score folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    npz = [p for p in files if p.name.lower().endswith(".npz")]
    if npz:
        return {p.name[:-4]: p for p in npz}
    out = {}
    for p in files:
        name = p.name.lower()
        if name.endswith(VOLUME_EXTENSIONS) and not name.endswith((".dcm", ".raw", ".zraw")):
            out[case_id(p)] = p
    if not out:
        raise ValueError(f"score folder {folder} holds no .npz, .nii/.nii.gz, .nrrd or .mha/.mhd score maps")
    return out


def read_scores(path: str | os.PathLike, labels: list[int], gt) -> dict[int, np.ndarray]:
    """``{label: float32 score map}`` of ``path`` for ``labels``, checked against the ground truth volume
    ``gt`` (shape; and geometry for volume files)."""
    p = Path(path)
    shape = tuple(np.asarray(gt.array).shape)
    if p.name.lower().endswith(".npz"):
        with np.load(p) as z:
            if "probabilities" in z.files:
                probs = z["probabilities"]
            elif len(z.files) == 1:
                probs = z[z.files[0]]
            else:
                raise ValueError(f"{p}: no 'probabilities' array (nnU-Net --save_probabilities); "
                                 f"found {z.files}")
        if probs.ndim == len(shape):
            probs = probs[None]
        if tuple(probs.shape[1:]) != shape:
            hint = (" (reversed: written by nnU-Net's NibabelIO? segbalance reads arrays as SimpleITK does)"
                    if tuple(probs.shape[1:]) == shape[::-1] else "")
            raise ValueError(f"{p}: probabilities of shape {probs.shape[1:]} differ from the ground truth's "
                             f"{shape}{hint}")
        out = {}
        for lab in labels:
            if probs.shape[0] == 1 and len(labels) == 1:
                out[lab] = probs[0]
            elif not 0 <= lab < probs.shape[0]:
                raise ValueError(f"{p}: no channel for label {lab} ({probs.shape[0]} channels)")
            else:
                out[lab] = probs[lab]
        return {k: _finite(np.asarray(v, np.float32), p) for k, v in out.items()}
    from segbalance.io.volumes import read_volume
    from segbalance.preprocessing.pairing import check_geometry

    vol = read_volume(p)
    check_geometry(gt, vol)
    if len(labels) != 1:
        raise ValueError(f"{p}: a single-channel score map scores one class, but the detection classes are "
                         f"{labels}: give --lesion-labels with one class (or use nnU-Net's .npz)")
    return {labels[0]: _finite(np.asarray(vol.array, np.float32), p)}


def _finite(a: np.ndarray, p: Path) -> np.ndarray:
    if not np.isfinite(a).all():
        raise ValueError(f"{p}: score map holds NaN or infinite values")
    return a
