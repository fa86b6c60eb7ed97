"""The loss comparison users need: 3D, through the real ``nnUNetv2_*`` commands, on many small lesions.

For each trainer × fold: ``nnUNetv2_train DATASET 3d_fullres FOLD -tr <Trainer>_<budget>`` on multi-lesion
CT phantoms (``segbalance.synthetic``, several lesions per volume with a spread of sizes), then
``nnUNetv2_predict`` of the held-out cases, then ``segbalance evaluate`` (voxel and lesion-level metrics)
of those predictions. One JSON per run under ``WORK/runs/`` (kept), one summary JSON (mean ± std over
folds, lesions found / missed) written to ``--json``.

Budgets are trainer variants written into ``WORK/ext`` (a folder added to ``nnUNet_extTrainer`` beside
segbalance's own): ``<Trainer>_cmp<budget>`` sets the number of epochs and iterations; the plans are
shrunk for the CPU budgets (patch, batch and network, as ``tests/test_nnunet_e2e.py`` does).
``nnUNetTrainerCELoss`` (nnU-Net's own CE-only trainer) runs as the control of the CE-based losses.

Resumable: a run whose record ``WORK/runs/<trainer>_fold<k>.json`` exists is reused; otherwise training
continues from ``checkpoint_latest.pth`` (``--c``, saved every epoch) or is skipped when
``checkpoint_final.pth`` exists, and the test cases are predicted and evaluated anew. ``WORK/setup.json``
records the budget, phantoms and lesion evaluation: a work folder made by another setup is cleared first,
so no result from an older setup is kept. A progress line per run. Invocations with disjoint ``--trainers``
may share ``WORK`` at the same time (with ``--torch-threads 1`` on a small CPU machine: nnU-Net otherwise
gives each training every core).

The runs themselves are :mod:`segbalance.compare`'s (``segbalance compare`` on the user's own dataset):
:func:`segbalance.compare.runs.execute_run` trains, predicts (``--save_probabilities``) and evaluates one
trainer × fold and writes its record; a failed run is reported with its log's tail and the others go on
(exit code 1 at the end). The summary (:func:`segbalance.compare.report.aggregate` & co.) is the package's
too; this script keeps the phantoms, the budgets and its JSON.

Layout of ``WORK`` (``--work``/``<budget>``): ``raw/Dataset761_SegBalanceLesions/{imagesTs,labelsTs}`` (the
test cases), ``pred/<trainer>_fold<k>/`` (``nnUNetv2_predict``'s output), ``eval/<trainer>_fold<k>/``
(``segbalance evaluate``'s CSV/JSON), ``runs/``, ``logs/``, and nnU-Net's ``preprocessed``/``results``.
Lesions are 26-connected components matched one-to-one at IoU >= 0.5 (:data:`LESION_SETTINGS`, recorded
in every run's JSON with the ``gt`` and ``predictions`` folders, so the counts can be re-derived).

    python benchmarks/compare_nnunet.py --budget smoke --trainers nnUNetTrainer nnUNetTrainerDFL --folds 0
    python benchmarks/compare_nnunet.py --budget cpu                  # the CPU comparison (hours on 2 cores)
    python benchmarks/compare_nnunet.py --budget gpu --device cuda    # nnU-Net's own plans, 100 epochs
    python benchmarks/compare_nnunet.py --budget cpulong --lesions mixed --trainers nnUNetTrainer \
        nnUNetTrainerGDL nnUNetTrainerBoundary nnUNetTrainerBlob nnUNetTrainerCCDiceCE

``--lesions`` picks the phantoms' lesion sizes (:data:`LESION_SETTINGS_BY_NAME`): ``default``, six lesions
with radii drawn log-uniformly (on the first phantoms 60–1060 mm³, the largest rarely ≥ 1000 mm³: all of a
similar order), or ``mixed``, one large lesion (radius 10 mm, about 4 cm³) beside five small ones (radii
2.5–5 mm, 65–520 mm³) in the same organ, the setting where the instance losses (blob, CC-DiceCE) should
differ from the voxel-weighted ones. ``mixed`` runs in its own work folder (``<budget>-mixed``) and writes
``compare_nnunet_<budget>-mixed.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from segbalance.atomic import atomic_write_text
from segbalance.compare.report import (  # noqa: F401 - the benchmark's summary, re-exported for its tests
    VERSUS,
    _mean_std,
    aggregate,
    machine,
    markdown,
    markdown_versus,
    versus_baseline,
)
from segbalance.compare.runs import Run, Setup, _call, execute_run
from segbalance.trainers.diagnostics import DIAGNOSTICS_ENV

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATASET_ID = 761
DATASET = f"Dataset{DATASET_ID:03d}_SegBalanceLesions"
TRAINERS = [
    "nnUNetTrainer",  # nnU-Net's DC + CE, the baseline
    "nnUNetTrainerDFL", "nnUNetTrainerDCE", "nnUNetTrainerFocal", "nnUNetTrainerRecall",
    "nnUNetTrainerCEL1", "nnUNetTrainerCEKL", "nnUNetTrainerGDL", "nnUNetTrainerBoundary",
    "nnUNetTrainerHDDT", "nnUNetTrainerCombo",
    "nnUNetTrainerCELoss",  # nnU-Net's own CE-only trainer: the control for the CE-based rows
    # the forms that learn the lesions (docs/rare-class.md) and DFL + Dice as the table had it
    "nnUNetTrainerDFLDC", "nnUNetTrainerHDDTDiceCE", "nnUNetTrainerComboBeta09", "nnUNetTrainerDFLDice",
    "nnUNetTrainerHDDTDiceCECap",
    # instance-imbalance losses (every lesion weighs the same; maps made in the data loader)
    "nnUNetTrainerBlob", "nnUNetTrainerCCDiceCE",
]
#: the lesion evaluation (``segbalance evaluate``'s defaults, passed explicitly and recorded with every run)
LESION_SETTINGS = {"connectivity": 26, "matching": "iou", "iou_threshold": 0.5}
#: how ``--torch-threads`` reaches the budget trainers (nnU-Net sets every core before it builds them)
TORCH_THREADS_ENV = "SEGBALANCE_CMP_TORCH_THREADS"
#: budget → epochs, iterations per epoch, validation iterations, shrunken plans (None: nnU-Net's own)
BUDGETS: dict[str, dict] = {
    "smoke": {"epochs": 2, "iterations": 4, "val_iterations": 1, "cases": (6, 2),
              "plans": {"patch": [16, 48, 48], "batch": 2, "features": [8, 16, 32]}},
    "cpu": {"epochs": 30, "iterations": 25, "val_iterations": 2, "cases": (16, 8),
            "plans": {"patch": [24, 64, 64], "batch": 2, "features": [8, 16, 32, 64]}},
    # the cpu budget with twice the epochs: for the runs that had not yet found the lesions at 30 epochs
    "cpulong": {"epochs": 60, "iterations": 25, "val_iterations": 2, "cases": (16, 8),
                "plans": {"patch": [24, 64, 64], "batch": 2, "features": [8, 16, 32, 64]}},
    # the cpulong setting for 12 epochs: the papers' losses' gradient balance while the lesion stays off
    # (docs/rare-class.md; every run records its diagnostics)
    "cpudiag": {"epochs": 12, "iterations": 25, "val_iterations": 2, "cases": (16, 8),
                "plans": {"patch": [24, 64, 64], "batch": 2, "features": [8, 16, 32, 64]}},
    "gpu": {"epochs": 100, "iterations": 250, "val_iterations": 50, "cases": (32, 16), "plans": None},
}
SHAPE = (40, 96, 96)  # z, y, x of a phantom
SPACING = (2.5, 0.8, 0.8)
N_LESIONS = 6  # lesions per phantom, of varied sizes
#: ``--lesions`` → the phantoms' ``lesion_radii_mm`` (None: drawn log-uniformly, ``synthetic``'s default)
LESION_SETTINGS_BY_NAME: dict[str, tuple[float, ...] | None] = {
    "default": None,
    "mixed": (10.0, 2.5, 3.0, 3.5, 4.0, 5.0),  # one large lesion beside five small ones
}
#: the setting of this process (``main`` sets it from ``--lesions``)
LESIONS = "default"


def phantom_case(seed: int):
    """A CT phantom with an organ (label 1) and :data:`N_LESIONS` lesions (label 2) sized by the
    :data:`LESIONS` setting."""
    from segbalance import synthetic

    return synthetic.make_phantom(shape=SHAPE, spacing=SPACING, seed=seed, n_lesions=N_LESIONS,
                                  lesion_radii_mm=LESION_SETTINGS_BY_NAME[LESIONS])


def write_volume(array: np.ndarray, spacing, origin, path: Path) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    image.SetOrigin(tuple(float(o) for o in origin))
    sitk.WriteImage(image, str(path), useCompression=True)


def phantom_digest() -> str:
    """SHA-256 of the first training and first test phantom (image and label) as the current
    ``segbalance.synthetic`` makes them: a changed generator changes the setup, so a dataset written by an
    older generator is never reused."""
    import hashlib

    digest = hashlib.sha256()
    for seed in (0, 10000):
        ph = phantom_case(seed)
        digest.update(np.ascontiguousarray(ph.image, dtype=np.float32).tobytes())
        digest.update(np.ascontiguousarray(ph.label, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def start_clean(work: Path, spec: dict) -> None:
    """Make ``work`` hold only results of this setup: when ``work/setup.json`` (budget, phantoms and the
    generator's output, lesion evaluation) differs from the current one, or is missing, the dataset, plans,
    checkpoints, predictions and run records made from the older setup are removed before anything is
    reused."""
    setup = json.loads(json.dumps({"dataset": DATASET, "budget": spec, "shape": SHAPE, "spacing": SPACING,
                                   "n_lesions": N_LESIONS, "phantoms_sha256": phantom_digest(),
                                   **({"lesions": LESIONS} if LESIONS != "default" else {}),
                                   "lesion_settings": LESION_SETTINGS}))
    file = work / "setup.json"
    if file.is_file() and json.loads(file.read_text()) == setup:
        return
    made = ("raw", "preprocessed", "results", "pred", "eval", "runs", "logs", "plan.txt")
    derived = [work / d for d in made if (work / d).exists()]
    if derived:
        print(f"{work}: made by another setup; removing {', '.join(d.name for d in derived)}", flush=True)
    for d in derived:
        shutil.rmtree(d) if d.is_dir() else d.unlink()
    atomic_write_text(file, json.dumps(setup, indent=1))


def build_dataset(raw: Path, n_train: int, n_test: int) -> Path:
    """``imagesTr/labelsTr`` (seeds 0…) and ``imagesTs/labelsTs`` (seeds 10000…) with ``dataset.json``."""
    folder = raw / DATASET
    done = folder / ".complete.json"
    want = {"n_train": n_train, "n_test": n_test, "shape": SHAPE, "spacing": SPACING}
    if done.is_file() and json.loads(done.read_text()) == json.loads(json.dumps(want)):
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True)
    for split, seeds in (("Tr", range(n_train)), ("Ts", range(10000, 10000 + n_test))):
        for seed in seeds:
            ph = phantom_case(seed)
            image_file = folder / f"images{split}" / f"case{seed:05d}_0000.nii.gz"
            write_volume(ph.image, ph.spacing, ph.origin, image_file)
            write_volume(ph.label.astype(np.uint8), ph.spacing, ph.origin,
                         folder / f"labels{split}" / f"case{seed:05d}.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": n_train, "file_ending": ".nii.gz"}, indent=2))
    atomic_write_text(done, json.dumps(want))
    return folder


def shrink_plans(plans_file: Path, spec: dict) -> None:
    """Patch, batch and a smaller network for a CPU budget (``spec['features']`` per stage)."""
    plans = json.loads(plans_file.read_text())
    cfg = plans["configurations"]["3d_fullres"]
    cfg["batch_size"] = spec["batch"]
    cfg["patch_size"] = spec["patch"]
    arch = cfg["architecture"]["arch_kwargs"]
    n = len(spec["features"])
    arch["n_stages"] = n
    arch["features_per_stage"] = spec["features"]
    arch["kernel_sizes"] = [[3, 3, 3]] * n
    arch["strides"] = [[1, 1, 1], [1, 2, 2]] + [[2, 2, 2]] * (n - 2)
    arch["n_conv_per_stage"] = [2] * n
    arch["n_conv_per_stage_decoder"] = [2] * (n - 1)
    atomic_write_text(plans_file, json.dumps(plans, indent=2))


def trainer_import(trainer: str) -> str | None:
    """The import line a budget variant needs for an nnU-Net trainer that segbalance does not define
    (``nnUNetTrainerCELoss``); ``None`` for segbalance's trainers. An unknown name is an error naming it."""
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from segbalance.trainers.nnunet_ext import segbalance_nnunet_trainers as ours

    if hasattr(ours, trainer):
        return None
    cls = recursive_find_python_class(str(Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer"), trainer,
                                      "nnunetv2.training.nnUNetTrainer")
    if cls is None:
        raise SystemExit(f"--trainers: {trainer} is neither a segbalance nor an nnU-Net trainer")
    return f"from {cls.__module__} import {trainer}"


def write_budget_trainers(ext: Path, trainers: list[str], budget: str, spec: dict) -> dict[str, str]:
    """A module in ``ext`` with ``<Trainer>_cmp<budget>`` for each trainer; returns trainer → variant name."""
    ext.mkdir(parents=True, exist_ok=True)
    lines = [
        '"""Budget variants written by benchmarks/compare_nnunet.py (regenerated on every run)."""',
        "import os",
        "",
        "import torch",
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer",
        "from segbalance.trainers.nnunet_ext.segbalance_nnunet_trainers import *  # noqa: F403",
        "from segbalance.trainers.diagnostics import RareClassDiagnostics",
        "from segbalance.trainers.guard import NeverPredictedGuard",
        "",
    ]
    for line in map(trainer_import, trainers):
        if line and line not in lines:
            lines.append(line)
    names = {}
    for trainer in trainers:
        name = f"{trainer}_cmp{budget}"
        names[trainer] = name
        # nnU-Net's own trainers get the guard and the diagnostics that every segbalance trainer has
        own = trainer_import(trainer) is None
        bases = trainer if own else f"NeverPredictedGuard, RareClassDiagnostics, {trainer}"
        lines += [
            f"class {name}({bases}):",
            "    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device('cuda')):",
            "        super().__init__(plans, configuration, fold, dataset_json, device)",
            f"        if os.environ.get({TORCH_THREADS_ENV!r}):  # --torch-threads",
            f"            torch.set_num_threads(int(os.environ[{TORCH_THREADS_ENV!r}]))",
            f"        self.num_epochs = {spec['epochs']}",
            f"        self.num_iterations_per_epoch = {spec['iterations']}",
            f"        self.num_val_iterations_per_epoch = {spec['val_iterations']}",
            "        self.save_every = 1  # checkpoint_latest.pth every epoch: a killed run continues (--c)",
            "",
            "    def perform_actual_validation(self, save_probabilities=False):",
            "        # the comparison scores the held-out test cases, not the fold's validation cases",
            "        self.print_to_log_file('final validation skipped (benchmarks/compare_nnunet.py)')",
            "",
        ]
    # atomic: a concurrent invocation (disjoint --trainers) may be importing it right now
    atomic_write_text(ext / f"segbalance_compare_{budget}.py", "\n".join(lines))
    return names


def run(cmd: list[str], env: dict, log: Path) -> float:
    """Run ``cmd`` with its output in ``log``; its wall time; :class:`~segbalance.compare.runs.RunFailed`
    (a ``RuntimeError``) with the log's tail if it fails."""
    return _call(cmd, env, log, Path(cmd[0]).name)


@contextlib.contextmanager
def setup_lock(work: Path):
    """Hold ``WORK/.setup.lock`` while the shared setup (dataset, plans, budget module) is made, so that
    concurrent invocations do not build it twice at once (POSIX ``flock``; no lock where there is none)."""
    try:
        import fcntl
    except ImportError:  # Windows: run the invocations one after another
        yield
        return
    with open(work / ".setup.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def nnunet_env(work: Path, ext: Path, device: str, torch_threads: int | None = None) -> dict:
    from segbalance.trainers.discovery import register

    env = dict(os.environ)
    env.pop("nnUNet_extTrainer", None)
    register(env)
    env["nnUNet_extTrainer"] = os.pathsep.join([env["nnUNet_extTrainer"], str(ext)])
    env.update(nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "preprocessed"),
               nnUNet_results=str(work / "results"), nnUNet_compile="false",
               nnUNet_def_n_proc="1", nnUNet_n_proc_DA="0" if device == "cpu" else "8")
    env.pop(TORCH_THREADS_ENV, None)  # only --torch-threads decides
    env[DIAGNOSTICS_ENV] = "1"  # every run records its gradient balance per epoch (docs/rare-class.md)
    if torch_threads:
        env[TORCH_THREADS_ENV] = str(torch_threads)
    return env


def compare_setup(work: Path, dataset: Path, env: dict, device: str) -> Setup:
    """The :class:`segbalance.compare.runs.Setup` of the phantom comparison: the held-out test cases
    (``imagesTs``/``labelsTs``) scored per voxel and per lesion (labels 1 and 2, :data:`LESION_SETTINGS`),
    predicted without TTA, one process each."""
    return Setup(dataset=DATASET, configuration="3d_fullres", out=str(work), env=env, device=device,
                 test_images=str(dataset / "imagesTs"), test_labels=str(dataset / "labelsTs"),
                 labels=[1, 2], lesion_labels=[1, 2], lesion_settings=dict(LESION_SETTINGS),
                 predict_args=["--disable_tta", "-npp", "1", "-nps", "1"], bin=str(BIN))


def train_predict_evaluate(trainer: str, variant: str, fold: int, work: Path, dataset: Path, env: dict,
                           device: str) -> dict:
    """One run (resumable) through :func:`segbalance.compare.runs.execute_run`; its record (wall times and
    the evaluation's per-class voxel + lesion rows), or its failure record (``failed``, the log's tail)."""
    return execute_run(compare_setup(work, dataset, env, device), Run(trainer, fold, variant))


def independent_lesion_counts(gt_dir: Path, pred_dir: Path, label: int) -> tuple[int, int, int]:
    """(GT lesions, matched at IoU >= 0.5, false-positive components) over all cases, counted without
    segbalance: nibabel + scipy's 26-connected labelling. At IoU >= 0.5 a component has at most one partner,
    so counting pairs is the one-to-one matching."""
    import nibabel as nib
    from scipy import ndimage

    n_gt = tp = fp = 0
    for gt_file in sorted(Path(gt_dir).glob("*.nii.gz")):
        g = np.asarray(nib.load(gt_file).dataobj) == label
        p = np.asarray(nib.load(Path(pred_dir) / gt_file.name).dataobj) == label
        gl, ng = ndimage.label(g, np.ones((3, 3, 3)))
        pl, npred = ndimage.label(p, np.ones((3, 3, 3)))
        g_size = np.bincount(gl.ravel(), minlength=ng + 1)
        p_size = np.bincount(pl.ravel(), minlength=npred + 1)
        both = (gl > 0) & (pl > 0)
        pairs, inter = np.unique(np.stack([gl[both], pl[both]]), axis=1, return_counts=True)
        iou = inter / (g_size[pairs[0]] + p_size[pairs[1]] - inter) if inter.size else inter
        matched = int((iou >= 0.5).sum())
        n_gt, tp, fp = n_gt + ng, tp + matched, fp + npred - matched
    return n_gt, tp, fp


def recount(records: list[dict]) -> list[dict]:
    """Each run's (GT lesions, found, FP) per class from ``segbalance evaluate`` beside
    :func:`independent_lesion_counts` of its prediction files; runs whose predictions are not on this
    machine (records reused from an earlier session) are listed as not recounted."""
    out = []
    for r in records:
        pred, gt = Path(r["predictions"]), Path(r["gt"])
        entry: dict = {"trainer": r["trainer"], "fold": r["fold"]}
        if not pred.is_dir() or not gt.is_dir():
            entry["recounted"] = False
            out.append(entry)
            continue
        entry["recounted"] = True
        by_label = {s["label"]: s for s in r["evaluation"]["lesions.json"]["summary"]}
        for label in (1, 2):
            ours = [by_label[label][k] for k in ("n_gt", "tp", "fp")]
            theirs = list(independent_lesion_counts(gt, pred, label))
            entry[str(label)] = {"evaluate": ours, "independent": theirs, "equal": ours == theirs}
        out.append(entry)
    return out


def prepare(work: Path, args: argparse.Namespace, spec: dict) -> tuple[Path, dict[str, str], dict]:
    """The shared setup (under :func:`setup_lock`): the phantom dataset, the budget trainers, nnU-Net's
    environment, the shrunken plans; returns (raw dataset folder, trainer → budget variant, environment)."""
    dataset = build_dataset(work / "raw", *spec["cases"])
    # every budget variant, not only this invocation's: a concurrent invocation imports the same module
    every = list(dict.fromkeys(TRAINERS + args.trainers))
    variants = write_budget_trainers(work / "ext", every, args.budget, spec)
    names = {t: variants[t] for t in args.trainers}
    env = nnunet_env(work, work / "ext", args.device, args.torch_threads)
    plans_file = work / "preprocessed" / DATASET / "nnUNetPlans.json"
    # written last: nnU-Net writes the plans before it preprocesses, and the plans are shrunk after, so the
    # plans file alone would let a run killed in between be reused half-made
    planned = plans_file.with_name(".complete.json")
    if not planned.is_file():
        print("planning and preprocessing …", flush=True)
        plan_env = {**env, "nnUNet_n_proc_DA": "1"}  # planning needs >= 1 (it sets torch's thread count)
        run([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "3d_fullres",
             "--verify_dataset_integrity", "-np", "1", "-npfp", "1"], plan_env, work / "plan.txt")
        if spec["plans"]:
            shrink_plans(plans_file, spec["plans"])
        atomic_write_text(planned, json.dumps({"plans": spec["plans"]}))
    return dataset, names, env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    ap.add_argument("--trainers", nargs="+", default=TRAINERS,
                    help="nnU-Net trainer names, with or without the nnUNetTrainer prefix (default: all)")
    ap.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "compare_nnunet")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch threads per training (nnU-Net takes every core). Two invocations with "
                    "disjoint --trainers and --torch-threads 1 share 2 cores without oversubscribing")
    ap.add_argument("--json", type=Path, default=None, help="summary JSON (default benchmarks/results/"
                    "compare_nnunet_<budget>.json)")
    ap.add_argument("--lesions", choices=sorted(LESION_SETTINGS_BY_NAME), default="default",
                    help="phantom lesion sizes: default (log-uniform radii) or mixed (one large lesion "
                    "beside "
                    "five small ones); mixed uses the work folder <budget>-mixed")
    ap.add_argument("--reuse-only", action="store_true",
                    help="train nothing: summarise the runs of --trainers x --folds that have a record")
    args = ap.parse_args(argv)
    if args.torch_threads is not None and args.torch_threads < 1:
        ap.error(f"--torch-threads: {args.torch_threads} is not a thread count (>= 1)")
    # "DFL" and "nnUNetTrainerDFL" name the same trainer
    args.trainers = [t if t.startswith("nnUNetTrainer") else f"nnUNetTrainer{t}" for t in args.trainers]
    global LESIONS
    LESIONS = args.lesions
    spec = BUDGETS[args.budget]
    setting = args.budget if args.lesions == "default" else f"{args.budget}-{args.lesions}"
    work = args.work / setting
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not args.reuse_only:  # --reuse-only trains nothing: it needs no dataset, plans or trainers
        with setup_lock(work):
            start_clean(work, spec)
            dataset, names, env = prepare(work, args, spec)
    else:
        start_clean(work, spec)  # a record made by another setup is not summarised either
        dataset, names, env = work / "raw" / DATASET, {}, {}
    records: list[dict] = []
    failures: list[dict] = []
    total = len(args.trainers) * len(args.folds)
    for i, (trainer, fold) in enumerate(((t, f) for t in args.trainers for f in args.folds), start=1):
        if args.reuse_only and not (work / "runs" / f"{trainer}_fold{fold}.json").is_file():
            print(f"[{i}/{total}] {trainer} fold {fold}: no record, left out (--reuse-only)", flush=True)
            continue
        t_run = time.perf_counter()
        if args.reuse_only:
            records.append(json.loads((work / "runs" / f"{trainer}_fold{fold}.json").read_text()))
            print(f"[{i}/{total}] {trainer} fold {fold}: record reused (--reuse-only)", flush=True)
            continue
        record = train_predict_evaluate(trainer, names[trainer], fold, work, dataset, env, args.device)
        if record.get("failed"):  # reported with its log's tail; the other runs go on
            failures.append(record)
            print(f"[{i}/{total}] {trainer} fold {fold}: FAILED in {record['step']} (exit "
                  f"{record['exit_code']}); log {record['log']}, its last lines:\n{record['log_tail']}",
                  flush=True)
            continue
        records.append(record)
        print(f"[{i}/{total}] {trainer} fold {fold}: done in {time.perf_counter() - t_run:.0f} s "
              f"(elapsed {time.perf_counter() - t0:.0f} s)", flush=True)
    table = aggregate(records)
    versus = versus_baseline(table)
    versus_ce = versus_baseline(table, baseline="nnUNetTrainerCELoss")  # the CE-based rows against plain CE
    print(markdown(table))
    for entries in (versus, versus_ce):
        if entries:
            print(markdown_versus(entries))
    summary = {"machine": machine(), "budget": {"name": args.budget, **spec}, "trainers": args.trainers,
               "phantoms": {"shape_zyx": SHAPE, "spacing_zyx_mm": SPACING, "lesions_per_phantom": N_LESIONS,
                            "lesions": args.lesions,
                            "lesion_radii_mm": LESION_SETTINGS_BY_NAME[args.lesions]},
               "lesion_settings": LESION_SETTINGS, "versus_baseline": versus, "versus_ce_control": versus_ce,
               "folds": args.folds, "wall_s": time.perf_counter() - t0,
               # the runs' own times (a resumed invocation's wall_s counts only what it did itself)
               "runs_s": sum(r.get(k, 0.0) for r in records for k in ("train_s", "predict_s", "evaluate_s")),
               "table": table, "recount": recount(records), "runs": records, "failed_runs": failures}
    out = args.json or ROOT / "benchmarks" / "results" / f"compare_nnunet_{setting}.json"
    atomic_write_text(out, json.dumps(summary, indent=1, default=str))
    print(f"wrote {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
