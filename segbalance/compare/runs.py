"""One run of ``segbalance compare``: ``nnUNetv2_train`` → ``nnUNetv2_predict --save_probabilities`` →
``segbalance evaluate``, resumable, with a JSON record per run.

A run is one trainer × fold. Its record ``OUT/runs/<trainer>_fold<k>.json`` is written last (atomically):
it is the "done" marker, and a later invocation reuses it. Without a record, training continues from
``checkpoint_latest.pth`` (``nnUNetv2_train --c``) or is skipped when ``checkpoint_final.pth`` exists; the
prediction and the evaluation are made anew. A failed command raises :class:`RunFailed` with the tail of its
log; :func:`execute_run` turns that into a failure record (``OUT/runs/<trainer>_fold<k>.failed.json``), so
one broken run never stops the others.

Everything here is plain data and module-level functions, so that submitit can pickle a run and start it on
another machine (a SLURM node) with the same code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from segbalance.atomic import atomic_write_text

__all__ = ["Setup", "Run", "RunFailed", "execute_run", "record_path", "failure_path", "load_record",
           "nnunet_command", "LOG_TAIL_LINES"]

#: lines of a failed command's log kept in its failure record and printed
LOG_TAIL_LINES = 40
#: nnU-Net's per-epoch lines, echoed while a run trains (the rest stays in the log)
_EPOCH_LINE = re.compile(r"(Epoch \d+|train_loss|val_loss|Pseudo dice|Epoch time|Yayy|New best)")


@dataclass(frozen=True)
class Run:
    """One trainer × fold. ``variant`` is the nnU-Net trainer class that is trained (``trainer`` unless a
    caller, such as the phantom benchmark, trains a budget variant under the trainer's name)."""

    trainer: str
    fold: int
    variant: str = ""

    @property
    def cls(self) -> str:
        return self.variant or self.trainer

    @property
    def name(self) -> str:
        return f"{self.trainer}_fold{self.fold}"


@dataclass
class Setup:
    """What every run of one comparison shares (picklable: submitit sends it to the jobs)."""

    dataset: str  # Dataset123_Name
    configuration: str
    out: str  # the comparison's folder (runs/, logs/, pred/, eval/, inputs/, gt/, report/)
    env: dict  # the environment of the nnU-Net commands (nnUNet_* paths, nnUNet_extTrainer …)
    plans: str = "nnUNetPlans"
    device: str = "cuda"
    #: held-out test set; when None each fold's own validation cases are scored (nnU-Net's cross-validation)
    test_images: str | None = None
    test_labels: str | None = None
    labels: list = field(default_factory=list)  # classes scored per voxel
    lesion_labels: list = field(default_factory=list)  # classes scored per lesion
    lesion_settings: dict = field(default_factory=lambda: {"connectivity": 26, "matching": "iou",
                                                           "iou_threshold": 0.5})
    size_bins: str | None = None  # ``segbalance evaluate --size-bins`` (None: its default)
    predict_args: list = field(default_factory=list)  # e.g. ["--disable_tta", "-npp", "1", "-nps", "1"]
    save_probabilities: bool = True
    bin: str = ""  # folder of the nnUNetv2_* commands ("" : beside this Python, else on PATH)

    @property
    def dataset_id(self) -> str:
        return str(int(self.dataset[7:10]))

    def results_folder(self, run: Run) -> Path:
        return (Path(self.env["nnUNet_results"]) / self.dataset
                / f"{run.cls}__{self.plans}__{self.configuration}" / f"fold_{run.fold}")


class RunFailed(RuntimeError):
    """A command of a run exited non-zero; ``step`` (train, predict, evaluate), its log and the log's tail."""

    def __init__(self, step: str, cmd: list[str], code: int, log: Path):
        self.step, self.cmd, self.code, self.log = step, cmd, code, log
        text = log.read_text(errors="replace") if log.is_file() else ""
        self.tail = "\n".join(text.splitlines()[-LOG_TAIL_LINES:])
        super().__init__(f"{step} failed (exit {code}): {' '.join(cmd[:8])} …; log {log}")


def record_path(out: str | Path, run: Run) -> Path:
    return Path(out) / "runs" / f"{run.name}.json"


def failure_path(out: str | Path, run: Run) -> Path:
    return Path(out) / "runs" / f"{run.name}.failed.json"


def load_record(out: str | Path, run: Run) -> dict | None:
    """The finished run's record, or None."""
    path = record_path(out, run)
    return json.loads(path.read_text()) if path.is_file() else None


def nnunet_command(setup: Setup, name: str) -> str:
    """``nnUNetv2_train`` & co.: beside this interpreter (a venv's ``bin``), else on ``PATH``."""
    folder = Path(setup.bin) if setup.bin else Path(sys.executable).parent
    candidate = folder / name
    if candidate.is_file():
        return str(candidate)
    return shutil.which(name) or name


def _call(cmd: list[str], env: dict, log: Path, step: str,
          echo: Callable[[str], None] | None = None) -> float:
    """Run ``cmd`` with its output in ``log`` (nnU-Net's per-epoch lines also to ``echo``); its wall time."""
    t0 = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**env, "PYTHONUNBUFFERED": "1"}  # nnU-Net's lines reach the log (and the console) as they come
    with open(log, "w") as fh:
        if echo is None:
            code = subprocess.call(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        else:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    bufsize=1, errors="replace")
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                fh.flush()
                if _EPOCH_LINE.search(line):
                    echo(line.rstrip())
            code = proc.wait()
    if code != 0:
        raise RunFailed(step, cmd, code, log)
    return time.perf_counter() - t0


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        dst.symlink_to(src.resolve())
    except OSError:  # no symlinks (some Windows setups, some file systems): copy
        shutil.copy2(src, dst)


def validation_inputs(setup: Setup, run: Run) -> tuple[Path, Path]:
    """The fold's validation cases (nnU-Net's ``splits_final.json``, written when its training started) as a
    folder of images for ``nnUNetv2_predict`` and one of labels for ``segbalance evaluate`` (links)."""
    from segbalance.compare.dataset import raw_cases

    splits_file = Path(setup.env["nnUNet_preprocessed"]) / setup.dataset / "splits_final.json"
    splits = json.loads(splits_file.read_text())
    cases = raw_cases(Path(setup.env["nnUNet_raw"]) / setup.dataset)
    images = Path(setup.out) / "inputs" / f"fold_{run.fold}"
    labels = Path(setup.out) / "gt" / f"fold_{run.fold}"
    for folder in (images, labels):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    for case in splits[run.fold]["val"]:
        for image in cases[case]["images"]:
            _link(Path(image), images / Path(image).name)
        label = Path(cases[case]["label"])
        _link(label, labels / label.name)
    return images, labels


def _epochs(fold_dir: Path) -> dict:
    """Epochs and iterations the trainer ran with (nnU-Net's ``debug.json`` in the fold folder)."""
    debug = fold_dir / "debug.json"
    if not debug.is_file():
        return {}
    info = json.loads(debug.read_text())
    keys = ("num_epochs", "num_iterations_per_epoch", "num_val_iterations_per_epoch", "current_epoch")
    # nnU-Net writes its attributes as strings
    return {k: int(info[k]) if str(info[k]).isdigit() else info[k] for k in keys if k in info}


def train_predict_evaluate(setup: Setup, run: Run, env_overrides: dict | None = None,
                           echo: Callable[[str], None] | None = None) -> dict:
    """One run (resumable); its record: wall times, the settings, the evaluation's per-class voxel and
    lesion summaries and per-case rows. A record that exists is returned as it is."""
    from segbalance.trainers.diagnostics import read_diagnostics

    record_file = record_path(setup.out, run)
    if record_file.is_file():
        return json.loads(record_file.read_text())
    out = Path(setup.out)
    env = {**setup.env, **(env_overrides or {})}
    if "CUDA_VISIBLE_DEVICES" not in env and "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]  # a SLURM job's own GPUs
    logs = out / "logs"
    fold_dir = setup.results_folder(run)
    times: dict = {}
    resumed = False
    if not (fold_dir / "checkpoint_final.pth").is_file():
        cmd = [nnunet_command(setup, "nnUNetv2_train"), setup.dataset_id, setup.configuration, str(run.fold),
               "-tr", run.cls, "-p", setup.plans, "-device", setup.device]
        if (fold_dir / "checkpoint_latest.pth").is_file():
            cmd.append("--c")
            resumed = True
        times["train_s"] = _call(cmd, env, logs / f"train_{run.trainer}_{run.fold}.txt", "train", echo)
    if setup.test_images:
        images, gt = Path(setup.test_images), Path(setup.test_labels or "")
    else:
        images, gt = validation_inputs(setup, run)
    pred = out / "pred" / run.name
    if pred.exists():
        shutil.rmtree(pred)
    cmd = [nnunet_command(setup, "nnUNetv2_predict"), "-i", str(images), "-o", str(pred),
           "-d", setup.dataset_id, "-c", setup.configuration, "-p", setup.plans, "-f", str(run.fold),
           "-tr", run.cls, "-device", setup.device, *setup.predict_args]
    if setup.save_probabilities:
        cmd.append("--save_probabilities")
    times["predict_s"] = _call(cmd, env, logs / f"predict_{run.trainer}_{run.fold}.txt", "predict")
    ev = out / "eval" / run.name
    ls = setup.lesion_settings
    cmd = [sys.executable, "-m", "segbalance.cli", "evaluate", "--gt", str(gt),
           "--pred", f"{run.trainer}={pred}", "--out", str(ev), "--no-plots", "--no-resume",
           "--connectivity", str(ls["connectivity"]), "--matching", ls["matching"],
           "--iou-threshold", str(ls["iou_threshold"])]
    if setup.labels:
        cmd += ["--labels", ",".join(map(str, setup.labels))]
    if setup.lesion_labels:
        cmd += ["--lesion-labels", ",".join(map(str, setup.lesion_labels))]
    if setup.size_bins:
        cmd += ["--size-bins", setup.size_bins]
    times["evaluate_s"] = _call(cmd, env, logs / f"evaluate_{run.trainer}_{run.fold}.txt", "evaluate")
    diagnostics_file = fold_dir / "segbalance_diagnostics.jsonl"
    diagnostics = read_diagnostics(str(diagnostics_file)) if diagnostics_file.is_file() else []
    record = {"trainer": run.trainer, "variant": run.cls, "fold": run.fold, **times,
              "diagnostics": diagnostics, "gt": str(gt), "predictions": str(pred),
              "lesion_settings": setup.lesion_settings, "evaluation": {}}
    for key, value in (("configuration", setup.configuration), ("plans", setup.plans),
                       ("scored", "test set" if setup.test_images else "fold validation cases"),
                       ("resumed", resumed), ("training", _epochs(fold_dir))):
        record[key] = value
    for name in sorted(p.name for p in ev.glob("*.json")):
        record["evaluation"][name] = json.loads((ev / name).read_text())
    record_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record_file, json.dumps(record, indent=1, default=str))  # the "done" marker
    failed = failure_path(setup.out, run)
    if failed.is_file():
        failed.unlink()
    return record


def execute_run(setup: Setup, run: Run, env_overrides: dict | None = None,
                echo: Callable[[str], None] | None = None) -> dict:
    """:func:`train_predict_evaluate`, with a failed command turned into a failure record (``failed``:
    True, the step, the command, its exit code, the log and its last lines) written beside the records.
    The function a backend calls (submitit pickles it with ``setup`` and ``run``)."""
    try:
        return train_predict_evaluate(setup, run, env_overrides, echo)
    except RunFailed as exc:
        failure = {"trainer": run.trainer, "fold": run.fold, "variant": run.cls, "failed": True,
                   "step": exc.step, "exit_code": exc.code, "command": exc.cmd, "log": str(exc.log),
                   "log_tail": exc.tail, "error": str(exc)}
        path = failure_path(setup.out, run)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(failure, indent=1))
        return failure

