"""``segbalance compare``: nnU-Net trainers × folds on your own dataset, scored per voxel and per lesion,
with paired statistics against a baseline trainer and plots (docs/compare.md)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

__all__ = ["register", "run", "prepare"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="compare nnU-Net trainers (losses) on your dataset: train × folds, lesion report",
        description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("-d", dest="dataset", required=True,
                   help="nnU-Net dataset id or name (123, Dataset123_Liver)")
    p.add_argument("-c", dest="configuration", default="3d_fullres",
                   help="configuration (default 3d_fullres)")
    p.add_argument("-tr", dest="trainers", nargs="+", required=True,
                   help="trainers: segbalance's (nnUNetTrainerDFL …) and nnU-Net's (nnUNetTrainer, "
                   "nnUNetTrainerCELoss …)")
    p.add_argument("-f", dest="folds", nargs="+", type=int, default=[0, 1, 2, 3, 4],
                   help="folds (default 0 1 2 3 4)")
    p.add_argument("-o", dest="out", required=True, help="output folder (records, predictions, report)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    p.add_argument("--baseline", help="trainer the others are compared with (default: the first -tr)")
    p.add_argument("--plan", action="store_true",
                   help="run nnUNetv2_plan_and_preprocess -c CONFIGURATION first when not yet planned")
    scored = p.add_mutually_exclusive_group()
    scored.add_argument("--test-set", dest="scoring", action="store_const", const="test",
                        help="score the held-out imagesTs/labelsTs (required to exist)")
    scored.add_argument("--cv", dest="scoring", action="store_const", const="cv",
                        help="score each fold's validation cases even when imagesTs/labelsTs exist")
    p.set_defaults(scoring="auto")
    p.add_argument("-device", "--device", dest="device", default="cuda", choices=("cuda", "cpu", "mps"),
                   help="nnU-Net's -device (default cuda)")
    p.add_argument("--disable-tta", action="store_true", help="nnUNetv2_predict --disable_tta")
    p.add_argument("--predict-processes", type=int, default=None,
                   help="nnUNetv2_predict -npp and -nps (default nnU-Net's; 0: nnU-Net's sequential "
                   "prediction, no worker processes)")
    p.add_argument("--no-probabilities", action="store_true",
                   help="predict without --save_probabilities (saves disk)")
    p.add_argument("--reuse-only", action="store_true", help="run nothing: report the finished runs")
    p.add_argument("--no-plots", action="store_true", help="no PNG plots")
    ev = p.add_argument_group("scoring (segbalance evaluate; docs/evaluation.md)")
    ev.add_argument("--labels", help="classes scored per voxel (default: every foreground label)")
    ev.add_argument("--lesion-labels", help="classes scored per lesion (default: every foreground label)")
    ev.add_argument("--connectivity", type=int, choices=(6, 18, 26), default=26)
    ev.add_argument("--matching", choices=("iou", "overlap"), default="iou")
    ev.add_argument("--iou-threshold", type=float, default=0.5)
    ev.add_argument("--size-bins", help="lesion size-bin edges in mm³ (segbalance evaluate's default)")
    be = p.add_argument_group("where the runs execute")
    be.add_argument("--executor", choices=("local", "slurm", "submitit-local"), default="local",
                    help="local (default), slurm (submitit job array), submitit-local (submitit's local "
                    "executor: the SLURM code path on this machine)")
    be.add_argument("--gpus", help="local: one run per GPU at a time, e.g. 0,1,2,3 (CUDA_VISIBLE_DEVICES)")
    be.add_argument("--partition", help="slurm: partition")
    be.add_argument("--time", default="24:00:00", help="slurm: time limit per job ([D-]HH:MM:SS or minutes)")
    be.add_argument("--gpus-per-job", type=int, default=1, help="slurm: GPUs per job (default 1)")
    be.add_argument("--cpus-per-job", type=int, default=None, help="slurm: CPUs per job")
    be.add_argument("--mem-gb", type=float, default=None, help="slurm: memory per job (GB)")
    be.add_argument("--array-parallelism", type=int, default=None, help="slurm: array elements at once")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _label_list(text: str | None, option: str, known: dict[int, str]) -> list[int]:
    from segbalance.errors import UserError

    if not text:
        return sorted(known)
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{option} {text}: expected comma-separated labels such as 1,2") from None
    bad = [v for v in values if v not in known]
    if bad:
        raise UserError(f"{option}: label {bad[0]} is not a foreground label of dataset.json "
                        f"({', '.join(f'{k}={v}' for k, v in sorted(known.items()))})")
    return values


def prepare(args: argparse.Namespace, env: dict | None = None):
    """Every check of the input (one :class:`UserError` line on the first problem) and the setup; nothing
    is written. Returns ``(setup, runs, labels, context)``."""
    from segbalance.compare import dataset as ds
    from segbalance.compare.backends import parse_gpus, parse_time
    from segbalance.compare.runs import Run, Setup
    from segbalance.errors import UserError
    from segbalance.extras import require
    from segbalance.trainers.discovery import register as register_trainers

    require("nnunetv2", needed_for="segbalance compare")
    if args.executor in ("slurm", "submitit-local"):
        require("submitit", needed_for=f"segbalance compare --executor {args.executor}")
    env = dict(os.environ if env is None else env)
    register_trainers(env)
    paths = ds.nnunet_paths(env)
    dataset = ds.find_dataset(args.dataset, paths)
    info = ds.dataset_json(dataset, paths)
    labels = ds.check_labels(dataset, paths, info)
    ds.check_configuration(dataset, paths, args.configuration, args.plans, args.plan)
    ds.check_folds(args.folds, dataset, paths)
    baseline = args.baseline or args.trainers[0]
    if baseline not in args.trainers:
        raise UserError(f"--baseline {baseline}: not among -tr ({' '.join(args.trainers)})")
    ds.check_trainers(args.trainers, env)
    test = ds.test_set(dataset, paths, info, args.scoring)
    voxel_labels = _label_list(args.labels, "--labels", labels)
    lesion_labels = _label_list(args.lesion_labels, "--lesion-labels", labels)
    if not set(lesion_labels) <= set(voxel_labels):
        raise UserError(f"--lesion-labels {args.lesion_labels}: not among the scored --labels {args.labels}")
    if not 0 < args.iou_threshold <= 1:
        raise UserError(f"--iou-threshold must be in (0, 1], got {args.iou_threshold}")
    if args.size_bins:
        from segbalance.evaluation.cli import parse_bins

        parse_bins(args.size_bins)
    gpus = parse_gpus(args.gpus)
    if gpus and args.executor != "local":
        raise UserError("--gpus is for --executor local; SLURM gives each job its GPUs (--gpus-per-job)")
    if gpus and args.device != "cuda":
        raise UserError(f"--gpus needs -device cuda (got {args.device})")
    if args.predict_processes is not None and args.predict_processes < 0:
        raise UserError(f"--predict-processes must be >= 0, got {args.predict_processes}")
    time_min = parse_time(args.time)
    predict_args = ["--disable_tta"] if args.disable_tta else []
    if args.predict_processes is not None:
        predict_args += ["-npp", str(args.predict_processes), "-nps", str(args.predict_processes)]
    setup = Setup(dataset=dataset, configuration=args.configuration, out=str(Path(args.out).resolve()),
                  env=env, plans=args.plans, device=args.device,
                  test_images=str(test[0]) if test else None, test_labels=str(test[1]) if test else None,
                  labels=voxel_labels, lesion_labels=lesion_labels,
                  lesion_settings={"connectivity": args.connectivity, "matching": args.matching,
                                   "iou_threshold": args.iou_threshold},
                  size_bins=args.size_bins, predict_args=predict_args,
                  save_probabilities=not args.no_probabilities)
    if args.executor != "local":  # a job uses the GPUs SLURM (or submitit) gives it, not this shell's
        setup.env.pop("CUDA_VISIBLE_DEVICES", None)
    runs = [Run(t, f) for t in args.trainers for f in args.folds]
    return setup, runs, labels, {"baseline": baseline, "gpus": gpus, "time_min": time_min, "info": info}


def plan_and_preprocess(setup, args) -> None:
    from segbalance.compare.runs import _call, nnunet_command

    plans_file = Path(setup.env["nnUNet_preprocessed"]) / setup.dataset / f"{setup.plans}.json"
    if plans_file.is_file():
        return
    print(f"planning and preprocessing {setup.dataset} ({setup.configuration}) …", flush=True)
    _call([nnunet_command(setup, "nnUNetv2_plan_and_preprocess"), "-d", setup.dataset_id,
           "-c", setup.configuration, "--verify_dataset_integrity"],
          # nnU-Net's planner sets torch's threads from nnUNet_n_proc_DA, which must then be >= 1
          {**setup.env, "nnUNet_n_proc_DA": str(max(1, int(setup.env.get("nnUNet_n_proc_DA") or 1)))},
          Path(setup.out) / "logs" / "plan_and_preprocess.txt", "plan")


def settings_of(setup, runs, context, records: list[dict], args) -> dict:
    """Every setting the report's numbers depend on."""
    training = {r["trainer"]: r.get("training", {}) for r in records}
    epochs = sorted({str(t.get("num_epochs")) for t in training.values() if t})
    return {
        "dataset": setup.dataset, "configuration": setup.configuration, "plans": setup.plans,
        "trainers": list(dict.fromkeys(r.trainer for r in runs)), "baseline": context["baseline"],
        "folds": sorted({r.fold for r in runs}),
        "scored": (f"held-out test set {setup.test_images} / {setup.test_labels}" if setup.test_images
                   else "each fold's validation cases (nnU-Net's splits_final.json)"),
        "epochs": ", ".join(epochs) if epochs else "n/a",
        "training per trainer (nnU-Net's debug.json)": training,
        "voxel labels": setup.labels, "lesion labels": setup.lesion_labels,
        "hit criterion": (f"one-to-one match at IoU >= {setup.lesion_settings['iou_threshold']}"
                          if setup.lesion_settings["matching"] == "iou" else "any overlap"),
        "connectivity": setup.lesion_settings["connectivity"],
        "size bins (mm³)": setup.size_bins or "segbalance evaluate's default",
        "device": setup.device, "prediction": " ".join(setup.predict_args) or "nnU-Net's defaults (TTA on)",
        "executor": args.executor, "finished runs": len(records),
    }


def run(args: argparse.Namespace) -> int:
    from segbalance.compare.backends import run_local, run_submitit
    from segbalance.compare.report import write_report
    from segbalance.compare.runs import load_record

    setup, runs, labels, context = prepare(args)
    out = Path(setup.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.plan and not args.reuse_only:
        plan_and_preprocess(setup, args)
    finished = {r: load_record(out, r) for r in runs}
    todo = [r for r in runs if finished[r] is None]
    for r in runs:
        if finished[r] is not None:
            print(f"{r.trainer} fold {r.fold}: finished earlier, reused "
                  f"({out / 'runs' / (r.name + '.json')})")
    results: dict = {}
    if args.reuse_only:
        for r in todo:
            print(f"{r.trainer} fold {r.fold}: no record, left out (--reuse-only)")
    elif args.executor == "local":
        results = dict(zip(todo, run_local(setup, todo, context["gpus"], progress=not args.no_progress)))
    else:
        results = dict(zip(todo, run_submitit(
            setup, todo, executor="local" if args.executor == "submitit-local" else "slurm",
            partition=args.partition, time_min=context["time_min"], gpus_per_job=args.gpus_per_job,
            cpus_per_job=args.cpus_per_job, mem_gb=args.mem_gb, array_parallelism=args.array_parallelism)))
    records = [finished[r] or results.get(r) for r in runs]
    failures = [r for r in records if r and r.get("failed")]
    records = [r for r in records if r and not r.get("failed")]
    settings = settings_of(setup, runs, context, records, args)
    report = write_report(out / "report", records, failures, settings, {k: labels[k] for k in setup.labels},
                          setup.lesion_labels, context["baseline"], plots=not args.no_plots)
    print((out / "report" / "report.md").read_text())
    print(f"{len(records)} run(s) finished, {len(failures)} failed, {len(todo) - len(results)} left out; "
          f"{time.perf_counter() - t0:.0f} s; wrote {out / 'report'}")
    del report
    if failures:
        print("failed: " + ", ".join(f"{f['trainer']} fold {f['fold']} ({f['step']})" for f in failures),
              file=sys.stderr)
        return 1
    return 0
