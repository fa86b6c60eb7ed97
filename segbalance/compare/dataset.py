"""The input of ``segbalance compare``, checked before anything starts: the nnU-Net dataset (by id or name,
through nnU-Net's own ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results``), its labels, the
configuration and plans, the trainers, the folds and the optional held-out test set.

Every problem is a :class:`~segbalance.errors.UserError` with one line that names the input, which the
command prints as ``segbalance compare: error: …`` (exit 2).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

from segbalance.errors import UserError

__all__ = ["nnunet_paths", "find_dataset", "raw_cases", "check_labels", "check_configuration",
           "check_trainers", "check_folds", "test_set", "N_FOLDS_DEFAULT"]

#: nnU-Net's cross-validation splits when ``splits_final.json`` does not exist yet
N_FOLDS_DEFAULT = 5
PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def nnunet_paths(env: dict) -> dict[str, Path]:
    """The three nnU-Net folders from ``env``; an unset one is an error naming it."""
    missing = [v for v in PATH_VARS if not env.get(v)]
    if missing:
        raise UserError(f"{', '.join(missing)} not set: nnU-Net's environment variables name the dataset "
                        "folders (export nnUNet_raw=… nnUNet_preprocessed=… nnUNet_results=…)")
    return {v: Path(env[v]) for v in PATH_VARS}


def find_dataset(spec: str, paths: dict[str, Path]) -> str:
    """``123``, ``Dataset123_Liver`` or ``Dataset123`` → ``Dataset123_Liver``, as nnU-Net finds it (in
    ``nnUNet_raw`` or ``nnUNet_preprocessed``); unknown or ambiguous is an error."""
    text = str(spec).strip()
    if text.startswith("Dataset"):
        digits = text[7:10]
    else:
        digits = text
    try:
        number = int(digits)
    except ValueError:
        raise UserError(f"-d {spec}: not a dataset id (123) or name (Dataset123_Name)") from None
    prefix = f"Dataset{number:03d}"
    found = set()
    for var in ("nnUNet_raw", "nnUNet_preprocessed"):
        folder = paths[var]
        if folder.is_dir():
            found |= {p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith(prefix + "_")}
    if text.startswith("Dataset") and "_" in text:
        found = {n for n in found if n == text}
    if not found:
        raise UserError(f"-d {spec}: no dataset {prefix}_* in nnUNet_raw ({paths['nnUNet_raw']}) or "
                        f"nnUNet_preprocessed ({paths['nnUNet_preprocessed']})")
    if len(found) > 1:
        raise UserError(f"-d {spec}: more than one dataset with id {number}: {', '.join(sorted(found))}")
    return found.pop()


def dataset_json(dataset: str, paths: dict[str, Path]) -> dict:
    for folder in (paths["nnUNet_raw"] / dataset, paths["nnUNet_preprocessed"] / dataset):
        if (folder / "dataset.json").is_file():
            return json.loads((folder / "dataset.json").read_text())
    raise UserError(f"{dataset}: no dataset.json in nnUNet_raw or nnUNet_preprocessed")


def raw_cases(raw_folder: Path) -> dict[str, dict]:
    """nnU-Net's own listing of the training cases: ``{case: {"images": [...], "label": path}}``."""
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    return get_filenames_of_train_images_and_targets(str(raw_folder))


def check_labels(dataset: str, paths: dict[str, Path], info: dict) -> dict[int, str]:
    """The foreground classes ``{value: name}`` of ``dataset.json``; every training case has its label file
    (in ``nnUNet_raw``, where nnU-Net's validation cases are scored from)."""
    labels = info.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise UserError(f"{dataset}: dataset.json has no 'labels'")
    out: dict[int, str] = {}
    for name, value in labels.items():
        if not isinstance(value, int):
            raise UserError(f"{dataset}: label {name!r} is a region ({value}); segbalance compare scores "
                            "plain labels only")
        if value > 0:
            out[value] = str(name)
    if not out:
        raise UserError(f"{dataset}: dataset.json labels hold no foreground class")
    raw = paths["nnUNet_raw"] / dataset
    if not raw.is_dir():
        raise UserError(f"{dataset}: not in nnUNet_raw ({paths['nnUNet_raw']}); the labels are read "
                        "from there")
    if "dataset" not in info and not (raw / "labelsTr").is_dir():
        raise UserError(f"{dataset}: labels missing: no folder {raw / 'labelsTr'}")
    cases = raw_cases(raw)
    if not cases:
        raise UserError(f"{dataset}: no training cases in {raw / 'imagesTr'}")
    missing = sorted(c for c, v in cases.items() if not Path(v["label"]).is_file())
    if missing:
        raise UserError(f"{dataset}: labels missing for {len(missing)} case(s) in {raw / 'labelsTr'}: "
                        f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    return out


def check_configuration(dataset: str, paths: dict[str, Path], configuration: str, plans: str,
                        will_plan: bool) -> None:
    """The plans exist and hold ``configuration``, whose preprocessed data exist (or ``--plan`` makes
    them: then the configuration must be one nnU-Net plans by default)."""
    plans_file = paths["nnUNet_preprocessed"] / dataset / f"{plans}.json"
    if not plans_file.is_file():
        if will_plan:
            if configuration not in ("2d", "3d_fullres", "3d_lowres"):
                raise UserError(f"-c {configuration}: --plan makes nnU-Net's default configurations only "
                                "(2d, 3d_fullres, 3d_lowres)")
            return
        raise UserError(f"{dataset}: not planned ({plans_file} missing); run nnUNetv2_plan_and_preprocess "
                        f"-d {int(dataset[7:10])} -c {configuration} first, or pass --plan")
    configurations = json.loads(plans_file.read_text()).get("configurations", {})
    if configuration not in configurations:
        raise UserError(f"-c {configuration}: not a configuration of {plans_file.name} "
                        f"(it has {', '.join(sorted(configurations))})")
    cfg = configurations[configuration]
    identifier = cfg.get("data_identifier")
    if identifier is None and "inherits_from" in cfg:
        identifier = configurations[cfg["inherits_from"]].get("data_identifier")
    data = paths["nnUNet_preprocessed"] / dataset / str(identifier)
    if identifier and not data.is_dir() and not will_plan:
        raise UserError(f"-c {configuration}: not preprocessed ({data} missing); run "
                        f"nnUNetv2_preprocess -d {int(dataset[7:10])} -c {configuration}, or pass --plan")


def check_trainers(trainers: list[str], env: dict) -> None:
    """Each name is a trainer nnU-Net finds: its own, segbalance's, or one in ``nnUNet_extTrainer``."""
    if len(set(trainers)) != len(trainers):
        raise UserError(f"-tr: a trainer is given twice ({' '.join(trainers)})")
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    saved = os.environ.get("nnUNet_extTrainer")
    os.environ["nnUNet_extTrainer"] = env.get("nnUNet_extTrainer", "")
    try:
        for trainer in trainers:
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints where it searches
                    recursive_find_trainer_class_by_name(trainer)
            except (RuntimeError, AssertionError):
                raise UserError(f"-tr {trainer}: no such nnU-Net trainer (not in nnunetv2, segbalance's "
                                "trainers or nnUNet_extTrainer; `segbalance losses` lists "
                                "segbalance's)") from None
    finally:
        if saved is None:
            os.environ.pop("nnUNet_extTrainer", None)
        else:
            os.environ["nnUNet_extTrainer"] = saved


def check_folds(folds: list[int], dataset: str, paths: dict[str, Path]) -> int:
    """Folds are distinct and within nnU-Net's splits (``splits_final.json``, else 5); the number of
    splits."""
    if len(set(folds)) != len(folds):
        raise UserError(f"-f: a fold is given twice ({' '.join(map(str, folds))})")
    splits_file = paths["nnUNet_preprocessed"] / dataset / "splits_final.json"
    n = len(json.loads(splits_file.read_text())) if splits_file.is_file() else N_FOLDS_DEFAULT
    bad = [f for f in folds if not 0 <= f < n]
    if bad:
        where = splits_file.name if splits_file.is_file() else "nnU-Net's default"
        raise UserError(f"-f {bad[0]}: out of range; {dataset} has {n} folds (0 … {n - 1}, {where})")
    return n


def test_set(dataset: str, paths: dict[str, Path], info: dict, mode: str) -> tuple[Path, Path] | None:
    """``imagesTs`` / ``labelsTs`` when they are to be scored: ``mode`` ``auto`` (when both exist), ``test``
    (required), ``cv`` (never: each fold's validation cases). Every test image has its label."""
    raw = paths["nnUNet_raw"] / dataset
    images, labels = raw / "imagesTs", raw / "labelsTs"
    if mode == "cv":
        return None
    if not images.is_dir() or not labels.is_dir():
        if mode == "test":
            which = "imagesTs" if not images.is_dir() else "labelsTs"
            raise UserError(f"--test-set: {dataset} has no {which} in {raw}")
        return None
    ending = info.get("file_ending", ".nii.gz")
    cases = {p.name[: -len(ending) - 5] for p in images.iterdir() if p.name.endswith(ending)}
    have = {p.name[: -len(ending)] for p in labels.iterdir() if p.name.endswith(ending)}
    if not cases:
        raise UserError(f"{images}: no images ending in {ending}")
    missing = sorted(cases - have)
    if missing:
        raise UserError(f"{labels}: labels missing for {len(missing)} test case(s): {', '.join(missing[:5])}")
    return images, labels
