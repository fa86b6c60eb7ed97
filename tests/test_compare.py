"""``segbalance compare``: the statistics against scipy on hand-made per-case values, the report, the input
checks (one line, exit 2, nothing started), the backends' hand-out of runs, a failing run; and (slow) end
to end on a tiny synthetic nnU-Net dataset made with ``nnUNetv2_plan_and_preprocess``: two trainers × two
folds through the local backend and submitit's local executor, a SIGKILL and the resume, a broken trainer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from segbalance.compare import report as rep
from segbalance.compare.backends import parse_gpus, parse_time
from segbalance.errors import UserError

BIN = Path(sys.executable).parent


# ------------------------------------------------------------------------------------------- hand-made
def _record(trainer: str, fold: int, cases: dict[str, tuple[float, int, int, int]]) -> dict:
    """A run record with per-case rows: case → (Dice of class 1, lesions in the GT, found, FP) (class 1)."""
    per_case = [{"case": c, "label": 1, "dice": d} for c, (d, _, _, _) in cases.items()]
    lesion_cases = [{"case": c, "label": 1, "n_gt": n, "tp": tp, "fp": fp,
                     "sensitivity": tp / n if n else float("nan")} for c, (_, n, tp, fp) in cases.items()]
    n_gt = sum(v[1] for v in cases.values())
    tp = sum(v[2] for v in cases.values())
    fp = sum(v[3] for v in cases.values())
    stat = {"mean": 0.5, "std": 0.0, "n": 1}
    summary = {"label": 1, "n_gt": n_gt, "tp": tp, "fp": fp, "fn": n_gt - tp, "fn_components": n_gt - tp,
               "sensitivity": stat, "precision": stat, "f1": stat, "lesion_dice": stat, "pq": stat,
               "by_size": {"lt100": {"n_gt": n_gt, "tp": tp}, "ge100": {"n_gt": 0, "tp": 0}}}
    return {"trainer": trainer, "fold": fold, "evaluation": {
        "per_case.json": per_case,
        "summary.json": {"summary": [{"label": 1, "hd95": {"mean": 1.0},
                                      "dice": {"mean": float(np.mean([v[0] for v in cases.values()]))}}]},
        "lesions.json": {"summary": [summary], "per_case": lesion_cases}}}


BASE = {f"c{i}": v for i, v in enumerate([(0.50, 4, 2, 1), (0.60, 3, 1, 0), (0.55, 5, 3, 2), (0.70, 2, 2, 0),
                                         (0.40, 4, 1, 3), (0.65, 3, 2, 1), (0.52, 6, 3, 2), (0.58, 0, 0, 1)])}
BETTER = {f"c{i}": v for i, v in enumerate([(0.62, 4, 4, 0), (0.61, 3, 3, 1), (0.70, 5, 4, 1),
                                           (0.69, 2, 2, 0), (0.55, 4, 3, 1), (0.80, 3, 3, 0),
                                           (0.60, 6, 5, 2), (0.66, 0, 0, 0)])}


def _split(cases: dict, fold_of) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for c, v in cases.items():
        out.setdefault(fold_of(c), {})[c] = v
    return out


def _cv_records(trainer: str, cases: dict) -> list[dict]:
    """Cross-validation: every case in one fold (c0-c3 fold 0, c4-c7 fold 1)."""
    return [_record(trainer, f, v) for f, v in _split(cases, lambda c: int(c[1:]) // 4).items()]


def test_paired_statistics_equal_scipy_on_hand_made_cases():
    records = _cv_records("base", BASE) + _cv_records("better", BETTER)
    values = rep.per_case_values(records, [1], [1])
    (entry,) = rep.paired_statistics(values, "base")
    assert entry["trainer"] == "better" and entry["baseline"] == "base"
    rows = {m["metric"]: m for m in entry["metrics"]}
    assert set(rows) == {"dice_1", "fp_1", "lesions_found_1", "lesion_sensitivity_1"}
    cases = sorted(BASE)
    for metric, index in (("dice_1", 0), ("fp_1", 3), ("lesions_found_1", 2)):
        a = np.array([BETTER[c][index] for c in cases], float)
        b = np.array([BASE[c][index] for c in cases], float)
        row = rows[metric]
        assert row["n_cases"] == 8 and row["folds"] == [0, 1]
        assert row["mean_difference"] == pytest.approx((a - b).mean())
        assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    # the sensitivity is undefined for c7 (no lesion in its ground truth): 7 pairs
    with_gt = [c for c in cases if BASE[c][1]]
    a = np.array([BETTER[c][2] / BETTER[c][1] for c in with_gt])
    b = np.array([BASE[c][2] / BASE[c][1] for c in with_gt])
    assert rows["lesion_sensitivity_1"]["n_cases"] == 7
    assert rows["lesion_sensitivity_1"]["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    # Holm by hand across the four metrics of this comparison
    order = sorted(rows.values(), key=lambda r: r["p_wilcoxon"])
    running = 0.0
    for k, row in enumerate(order):
        running = max(running, min(1.0, (4 - k) * row["p_wilcoxon"]))
        assert row["p_holm"] == pytest.approx(running)
    # the bootstrap CI of the difference in lesions found: scipy's, cases resampled, summed
    found = rows["lesions_found_1"]
    diffs = np.array([BETTER[c][2] - BASE[c][2] for c in cases], float)
    assert found["total_difference"] == diffs.sum() == 10
    ref = stats.bootstrap((diffs,), np.sum, n_resamples=9999, confidence_level=0.95, method="percentile",
                          rng=np.random.default_rng(0)).confidence_interval
    assert found["ci95_total_difference"] == pytest.approx([ref.low, ref.high])
    assert ref.low > 0


def test_holm_by_hand_and_none_stays_out_of_the_family():
    assert rep.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert rep.holm([0.02, None, 0.5]) == [pytest.approx(0.04), None, pytest.approx(0.5)]
    assert rep.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])


def test_no_p_value_with_too_few_cases_or_no_difference_and_test_set_cases_are_averaged_over_folds():
    few = {c: BASE[c] for c in ("c0", "c1", "c2", "c3", "c4")}
    values = rep.per_case_values(_cv_records("base", few) + _cv_records("same", few), [1], [1])
    for row in rep.paired_statistics(values, "base")[0]["metrics"]:
        assert row["p_wilcoxon"] is None and row["p_holm"] is None and "5 paired case(s) < 6" in row["no_p"]
    values = rep.per_case_values(_cv_records("base", BASE) + _cv_records("same", BASE), [1], [1])
    rows = rep.paired_statistics(values, "base")[0]["metrics"]
    assert all(r["p_wilcoxon"] is None and r["no_p"] == "every difference is 0" for r in rows)
    # a held-out test set: every case in both folds; each case enters once, as its mean over the folds
    base = [_record("base", f, BASE) for f in (0, 1)]
    shifted = {c: (v[0] + 0.1 * (f + 1), *v[1:]) for c, v in BETTER.items() for f in [0]}
    better = [_record("better", 0, BETTER), _record("better", 1, shifted)]
    values = rep.per_case_values(base + better, [1], [1])
    dice = next(r for r in rep.paired_statistics(values, "base")[0]["metrics"] if r["metric"] == "dice_1")
    a = np.array([(BETTER[c][0] + shifted[c][0]) / 2 for c in sorted(BASE)])
    b = np.array([BASE[c][0] for c in sorted(BASE)])
    assert dice["n_cases"] == 8 and dice["folds"] == [0, 1]
    assert dice["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue)


def test_report_files_state_settings_counts_and_plots(tmp_path):
    records = _cv_records("base", BASE) + _cv_records("better", BETTER)
    failure = {"trainer": "broken", "fold": 0, "step": "train", "exit_code": 1, "log": "x.txt",
               "log_tail": "RuntimeError: deliberately broken", "failed": True}
    settings = {"configuration": "3d_fullres", "epochs": "2", "hit criterion": "IoU >= 0.5",
                "connectivity": 26}
    out = rep.write_report(tmp_path, records, [failure], settings, {1: "lesion"}, [1], "base")
    md = (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["baseline"] == "base"
    for text in ("**configuration**: 3d_fullres", "**hit criterion**: IoU >= 0.5", "**connectivity**: 26",
                 "| better | 0,1 | 8 |", "### better − base", "deliberately broken",
                 "| lesions found (lesion) | 8 | 0,1 |", "total +10, 95% CI"):
        assert text in md, text
    assert sorted(out["plots"]) == ["dice_per_class.png", "false_positives_per_case.png",
                                    "lesion_sensitivity_by_size_1.png"]
    assert all((tmp_path / p).stat().st_size > 1000 for p in out["plots"])
    better = next(r for r in out["trainers"] if r["trainer"] == "better")
    assert better["lesions"]["1"]["found"] == 24 and better["lesions"]["1"]["n_gt"] == 27
    assert better["lesions"]["1"]["fp_per_case"] == pytest.approx(5 / 8)


def test_time_and_gpu_arguments():
    assert parse_time("90") == 90 and parse_time("1:30:00") == 90 and parse_time("1-00:00:00") == 1440
    assert parse_gpus("0,1,2,3") == ["0", "1", "2", "3"] and parse_gpus(None) == []
    for bad in ("0,0", "a", "0,,1"):
        with pytest.raises(UserError, match="--gpus"):
            parse_gpus(bad)
    with pytest.raises(UserError, match="--time"):
        parse_time("soon")


def test_one_run_per_gpu_at_a_time(monkeypatch):
    """--gpus: each run gets one GPU in CUDA_VISIBLE_DEVICES, and no GPU runs two at once."""
    from segbalance.compare import backends
    from segbalance.compare.runs import Run

    busy: dict[str, int] = {}
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def fake(setup, run, env_overrides=None, echo=None):
        gpu = env_overrides["CUDA_VISIBLE_DEVICES"]
        with lock:
            busy[gpu] = busy.get(gpu, 0) + 1
            assert busy[gpu] == 1
            seen.append((run.name, gpu))
        time.sleep(0.05)
        with lock:
            busy[gpu] -= 1
        return {"trainer": run.trainer, "fold": run.fold}

    monkeypatch.setattr(backends, "execute_run", fake)
    runs = [Run(t, f) for t in ("A", "B", "C") for f in (0, 1)]
    out = backends.run_local(None, runs, gpus=["0", "1"], progress=False)
    assert [(r["trainer"], r["fold"]) for r in out] == [(r.trainer, r.fold) for r in runs]
    assert {g for _, g in seen} == {"0", "1"} and len(seen) == 6


def test_a_failing_command_becomes_a_failure_record_with_its_log_tail(tmp_path, monkeypatch):
    from segbalance.compare.runs import Run, Setup, execute_run, failure_path

    fake = tmp_path / "bin"
    fake.mkdir()
    script = fake / "nnUNetv2_train"
    script.write_text("#!/bin/sh\necho gpu=$CUDA_VISIBLE_DEVICES\n"
                      "for i in $(seq 1 60); do echo line $i; done\n"
                      "echo 'CUDA out of memory'\nexit 3\n")
    script.chmod(0o755)
    setup = Setup(dataset="Dataset001_X", configuration="3d_fullres", out=str(tmp_path / "out"),
                  env={**os.environ, "nnUNet_results": str(tmp_path / "res")}, bin=str(fake), device="cpu")
    result = execute_run(setup, Run("nnUNetTrainerX", 0))
    assert result["failed"] and result["step"] == "train" and result["exit_code"] == 3
    assert result["log_tail"].splitlines()[-1] == "CUDA out of memory"
    assert len(result["log_tail"].splitlines()) == 40 and "line 22" in result["log_tail"]
    assert "line 21\n" not in result["log_tail"]
    assert json.loads(failure_path(setup.out, Run("nnUNetTrainerX", 0)).read_text())["exit_code"] == 3
    # a SLURM job's own GPUs reach the commands when the setup does not name any
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    env = {k: v for k, v in setup.env.items() if k != "CUDA_VISIBLE_DEVICES"}
    setup = Setup(dataset="Dataset001_X", configuration="3d_fullres", out=str(tmp_path / "out"), env=env,
                  bin=str(fake), device="cpu")
    execute_run(setup, Run("nnUNetTrainerX", 0))
    assert (tmp_path / "out" / "logs" / "train_nnUNetTrainerX_0.txt").read_text().startswith("gpu=3\n")


# ------------------------------------------------------------------------------------------- input
SHAPE = (24, 40, 40)
SPACING = (2.0, 1.0, 1.0)


def _ball(center, radii) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, s) for s in SHAPE)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) <= 1.0


def make_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An organ (1) holding two lesions (2) of different sizes, in noise."""
    rng = np.random.default_rng(seed)
    center = np.array(SHAPE) / 2 + rng.uniform(-2, 2, size=3)
    organ = _ball(center, (7, 14, 14))
    label = organ.astype(np.uint8)
    for shift, radii in (((0, -6, -5), (2, 3, 3)), ((1, 5, 6), (1.5, 2, 2))):
        label[_ball(center + np.array(shift) + rng.uniform(-1, 1, 3), radii) & organ] = 2
    image = rng.normal(-100, 20, SHAPE) + 140 * organ + 120 * (label == 2)
    return image.astype(np.float32), label


def write_dataset(raw: Path, name: str, n_train: int = 6, n_test: int = 0, labels: bool = True) -> Path:
    import SimpleITK as sitk

    folder = raw / name
    for sub in ("imagesTr", "labelsTr") + (("imagesTs", "labelsTs") if n_test else ()):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for split, seeds in (("Tr", range(n_train)), ("Ts", range(100, 100 + n_test))):
        for seed in seeds:
            image, label = make_case(seed)
            pairs = [(image, folder / f"images{split}" / f"case{seed:03d}_0000.nii.gz")]
            if labels:
                pairs.append((label, folder / f"labels{split}" / f"case{seed:03d}.nii.gz"))
            for array, path in pairs:
                img = sitk.GetImageFromArray(array)
                img.SetSpacing(SPACING[::-1])
                sitk.WriteImage(img, str(path))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": n_train, "file_ending": ".nii.gz"}))
    return folder


def fake_plans(pre: Path, name: str) -> None:
    (pre / name / "nnUNetPlans_3d_fullres").mkdir(parents=True)
    (pre / name / "nnUNetPlans.json").write_text(json.dumps({"configurations": {
        "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres"}, "2d": {"data_identifier": "x_2d"}}}))


@pytest.fixture(scope="module")
def _datasets(tmp_path_factory):
    """Three raw datasets (one good, one without labels, one not planned), made once for the module."""
    pytest.importorskip("nnunetv2")
    pytest.importorskip("SimpleITK")
    root = tmp_path_factory.mktemp("nnunet")
    folders = {k: root / k for k in ("raw", "pre", "res")}
    for f in folders.values():
        f.mkdir()
    write_dataset(folders["raw"], "Dataset771_Good", n_train=5)
    fake_plans(folders["pre"], "Dataset771_Good")
    write_dataset(folders["raw"], "Dataset772_NoLabels", n_train=5, labels=False)
    fake_plans(folders["pre"], "Dataset772_NoLabels")
    write_dataset(folders["raw"], "Dataset773_NotPlanned", n_train=5)
    return folders


@pytest.fixture
def nnunet_folders(_datasets, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(_datasets["raw"]))
    monkeypatch.setenv("nnUNet_preprocessed", str(_datasets["pre"]))
    monkeypatch.setenv("nnUNet_results", str(_datasets["res"]))
    return _datasets


@pytest.mark.parametrize("argv, message", [
    (["-d", "779"], "-d 779: no dataset Dataset779_*"),
    (["-d", "Dataset771_Other"], "-d Dataset771_Other: no dataset"),
    (["-d", "liver"], "-d liver: not a dataset id"),
    (["-c", "3d_lowres"], "-c 3d_lowres: not a configuration of nnUNetPlans.json (it has 2d, 3d_fullres)"),
    (["-c", "2d"], "-c 2d: not preprocessed"),
    (["-tr", "nnUNetTrainer", "nnUNetTrainerNoSuchLoss"],
     "-tr nnUNetTrainerNoSuchLoss: no such nnU-Net trainer"),
    (["-f", "0", "5"], "-f 5: out of range; Dataset771_Good has 5 folds (0 … 4"),
    (["-f", "1", "1"], "-f: a fold is given twice"),
    (["-d", "772"], "Dataset772_NoLabels: labels missing for 5 case(s)"),
    (["-d", "773"], "Dataset773_NotPlanned: not planned"),
    (["--baseline", "nnUNetTrainerDFL"], "--baseline nnUNetTrainerDFL: not among -tr"),
    (["--test-set"], "--test-set: Dataset771_Good has no imagesTs"),
    (["--lesion-labels", "3"], "--lesion-labels: label 3 is not a foreground label"),
    (["--gpus", "0,1", "--executor", "slurm"], "--gpus is for --executor local"),
])
def test_bad_input_is_one_line_exit_2_before_anything_starts(nnunet_folders, tmp_path, capsys, argv, message):
    from segbalance.cli import main

    out = tmp_path / "out"
    base = {"-d": "771", "-tr": ["nnUNetTrainer", "nnUNetTrainerCELoss"]}
    args = ["compare", "-o", str(out)] + argv
    if "-d" not in argv:
        args += ["-d", base["-d"]]
    if "-tr" not in argv:
        args += ["-tr", *base["-tr"]]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("segbalance compare: error: "), err
    assert message in err, err
    assert not out.exists()  # nothing started


def test_good_input_passes_the_checks(nnunet_folders, tmp_path):
    import argparse

    from segbalance.compare.cli import prepare, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["compare", "-d", "Dataset771_Good", "-tr", "nnUNetTrainer", "nnUNetTrainerDFL",
                              "-f", "0", "1", "-o", str(tmp_path / "o"), "-device", "cpu"])
    setup, runs, labels, context = prepare(args)
    assert setup.dataset == "Dataset771_Good" and setup.test_images is None  # no imagesTs: cross-validation
    assert labels == {1: "organ", 2: "lesion"} and setup.lesion_labels == [1, 2]
    assert [r.name for r in runs] == ["nnUNetTrainer_fold0", "nnUNetTrainer_fold1", "nnUNetTrainerDFL_fold0",
                                      "nnUNetTrainerDFL_fold1"]
    assert context["baseline"] == "nnUNetTrainer" and "--save_probabilities" not in setup.predict_args
    assert setup.save_probabilities and "segbalance" in setup.env["nnUNet_extTrainer"]


# ------------------------------------------------------------------------------------------- end to end
DATASET_ID = 774
DATASET = f"Dataset{DATASET_ID}_SegBalanceCompare"
TRAINERS = ["nnUNetTrainerDFLQuick", "nnUNetTrainerDCEQuick"]
#: the debug trainers (2 epochs x 2 iterations) without nnU-Net's final validation (compare scores its own
#: prediction), and a trainer that fails
EXT_TRAINERS = '''from segbalance.trainers.generated import (
    nnUNetTrainerDCE_debug,
    nnUNetTrainerDFL_debug,
    nnUNetTrainerFocal_debug,
)


class _Quick:
    def perform_actual_validation(self, save_probabilities=False):
        self.print_to_log_file("final validation skipped (tests/test_compare.py)")


class nnUNetTrainerDFLQuick(_Quick, nnUNetTrainerDFL_debug):
    pass


class nnUNetTrainerDCEQuick(_Quick, nnUNetTrainerDCE_debug):
    pass


class nnUNetTrainerFocalQuick(_Quick, nnUNetTrainerFocal_debug):
    pass


class nnUNetTrainerBroken(nnUNetTrainerDFL_debug):
    def run_training(self):
        raise RuntimeError("deliberately broken trainer")
'''


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SEGBALANCE_E2E_COMPARE") != "1",
                    reason="about an hour on 2 loaded cores (five nnU-Net runs, SIGKILL + resume): "
                           "SEGBALANCE_E2E_COMPARE=1 pytest -m slow tests/test_compare.py")
def test_end_to_end_local_submitit_kill_resume_and_a_failing_run(tmp_path, monkeypatch, capsys):
    """A user's dataset planned with nnUNetv2_plan_and_preprocess; 2 trainers × 2 folds at the debug budget
    (2 epochs × 2 iterations) on the CPU, scored on each fold's validation cases through the local backend;
    then the held-out test set through submitit's local executor, with a broken trainer beside them; and a
    third trainer killed (SIGKILL) while it trains, then resumed from its last checkpoint."""
    pytest.importorskip("nnunetv2")
    pytest.importorskip("submitit")
    pytest.importorskip("SimpleITK")
    from segbalance.cli import main

    raw, pre, res, ext = (tmp_path / k for k in ("raw", "pre", "res", "ext"))
    for f in (raw, pre, res, ext):
        f.mkdir()
    write_dataset(raw, DATASET, n_train=5, n_test=2)
    (ext / "compare_test_trainers.py").write_text(EXT_TRAINERS)
    env = {"nnUNet_raw": str(raw), "nnUNet_preprocessed": str(pre), "nnUNet_results": str(res),
           "nnUNet_extTrainer": str(ext), "nnUNet_n_proc_DA": "0", "nnUNet_compile": "false",
           "nnUNet_def_n_proc": "1", "OMP_NUM_THREADS": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    plan = subprocess.run([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID),
                           "-c", "3d_fullres", "-np", "1", "-npfp", "1"], capture_output=True, text=True,
                          env={**os.environ, **env, "nnUNet_n_proc_DA": "1"})  # planning needs >= 1
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    plans_file = pre / DATASET / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    cfg = plans["configurations"]["3d_fullres"]
    cfg.update(batch_size=2, patch_size=[16, 32, 32])
    arch = cfg["architecture"]["arch_kwargs"]
    arch.update(n_stages=3, features_per_stage=[4, 8, 16], strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]])
    for key in ("kernel_sizes", "n_conv_per_stage"):
        arch[key] = arch[key][:3]
    arch["n_conv_per_stage_decoder"] = arch["n_conv_per_stage_decoder"][:2]
    plans_file.write_text(json.dumps(plans))
    common = ["-d", str(DATASET_ID), "-device", "cpu", "--disable-tta", "--predict-processes", "0",
              "--no-progress"]

    # 1. local backend, cross-validation (the fold's validation cases), 2 trainers × 2 folds
    cv = tmp_path / "cv"
    assert main(["compare", *common, "-tr", *TRAINERS, "-f", "0", "1", "-o", str(cv), "--cv"]) == 0
    printed = capsys.readouterr().out
    assert "nnUNetTrainerDCEQuick fold 1: done" in printed and "Epoch 1" in printed  # nnU-Net's epoch lines
    splits = json.loads((pre / DATASET / "splits_final.json").read_text())
    report = json.loads((cv / "report" / "report.json").read_text())
    assert [r["trainer"] for r in report["trainers"]] == TRAINERS
    for row in report["trainers"]:
        assert row["folds"] == [0, 1] and row["cases"] == len(splits[0]["val"]) + len(splits[1]["val"])
        assert row["lesions"]["2"]["n_gt"] == 2 * row["cases"]  # two lesions per case
    for trainer in TRAINERS:
        for fold in (0, 1):
            rec = json.loads((cv / "runs" / f"{trainer}_fold{fold}.json").read_text())
            assert rec["scored"] == "fold validation cases" and rec["training"]["num_epochs"] == 2
            cases = {c["case"] for c in rec["evaluation"]["per_case.json"]}
            assert cases == set(splits[fold]["val"])
            assert len(list(Path(rec["predictions"]).glob("*.npz"))) == len(cases)  # --save_probabilities
    (entry,) = report["paired_vs_baseline"]
    assert entry["trainer"] == TRAINERS[1] and all(m["p_wilcoxon"] is None for m in entry["metrics"])  # < 6
    md = (cv / "report" / "report.md").read_text()
    assert "**epochs**: 2" in md and "**connectivity**: 26" in md and "one-to-one match at IoU >= 0.5" in md
    assert len(report["plots"]) == 4 and all((cv / "report" / p).is_file() for p in report["plots"])
    records = {p.name: p.read_text() for p in (cv / "runs").glob("*.json")}
    assert main(["compare", *common, "-tr", *TRAINERS, "-f", "0", "1", "-o", str(cv), "--cv"]) == 0
    assert "finished earlier, reused" in capsys.readouterr().out  # nothing is run again
    assert {p.name: p.read_text() for p in (cv / "runs").glob("*.json")} == records

    # 2. submitit's local executor (the SLURM code path), the held-out test set, and a broken trainer
    ts = tmp_path / "ts"
    code = main(["compare", *common, "-tr", *TRAINERS, "nnUNetTrainerBroken", "-f", "0", "1", "-o", str(ts),
                 "--executor", "submitit-local", "--time", "30"])
    captured = capsys.readouterr()
    assert code == 1, captured.out[-3000:]
    assert "submitted 6 job(s) (local)" in captured.out
    assert "nnUNetTrainerBroken fold 0: FAILED in train" in captured.out
    assert "deliberately broken trainer" in captured.out  # the log's tail
    report = json.loads((ts / "report" / "report.json").read_text())
    assert sorted((f["trainer"], f["fold"]) for f in report["failed_runs"]) == [("nnUNetTrainerBroken", 0),
                                                                                ("nnUNetTrainerBroken", 1)]
    assert [r["trainer"] for r in report["trainers"]] == TRAINERS  # the others finished
    for row in report["trainers"]:
        assert row["cases"] == 2 and row["case_scores"] == 4  # the 2 test cases, scored in both folds
    assert "held-out test set" in report["settings"]["scored"]
    assert "deliberately broken trainer" in (ts / "report" / "report.md").read_text()

    # 3. SIGKILL while training, then the same command resumes from checkpoint_latest.pth (--c)
    kill = tmp_path / "kill"
    argv = [sys.executable, "-m", "segbalance.cli", "compare", *common, "-tr", "nnUNetTrainerFocalQuick",
            "-f", "0", "-o", str(kill), "--cv"]
    fold_dir = res / DATASET / "nnUNetTrainerFocalQuick__nnUNetPlans__3d_fullres" / "fold_0"
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        # "Epoch 1" in nnU-Net's own log: epoch 0 ended and its checkpoint_latest.pth is written in full
        while proc.poll() is None and not any("Epoch 1" in f.read_text()
                                              for f in fold_dir.glob("training_log_*.txt")):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (fold_dir / "checkpoint_final.pth").is_file(), "killed too late: training had finished"
    assert not (kill / "runs" / "nnUNetTrainerFocalQuick_fold0.json").exists()
    assert main(["compare", *common[:-1], "-tr", "nnUNetTrainerFocalQuick", "-f", "0", "-o", str(kill),
                 "--cv", "--no-progress"]) == 0
    rec = json.loads((kill / "runs" / "nnUNetTrainerFocalQuick_fold0.json").read_text())
    assert rec["resumed"] and (fold_dir / "checkpoint_final.pth").is_file()


FAKE_TRAIN = """#!/bin/sh
case "$*" in *"-tr nnUNetTrainerBroken"*) echo "RuntimeError: deliberately broken"; exit 1;; esac
echo "Epoch 0"; exit 0
"""
FAKE_PREDICT = """#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out="$2"; shift; done
mkdir -p "$out" && cp "$FAKE_PREDICTIONS"/* "$out"/
"""


def test_submitit_local_executor_runs_the_records_and_reports_a_failure(tmp_path):
    """The SLURM code path through submitit's LocalExecutor, with stand-ins for nnU-Net's commands (the
    real ones run in the slow end-to-end test): a run's record comes back from its job, and a failing run
    comes back as a failure record with its log's tail."""
    pytest.importorskip("submitit")
    sitk = pytest.importorskip("SimpleITK")
    from segbalance.compare.backends import run_submitit
    from segbalance.compare.runs import Run, Setup

    fake = tmp_path / "bin"
    fake.mkdir()
    for name, text in (("nnUNetv2_train", FAKE_TRAIN), ("nnUNetv2_predict", FAKE_PREDICT)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    labels, images = tmp_path / "labelsTs", tmp_path / "imagesTs"
    labels.mkdir()
    images.mkdir()
    for i in range(2):
        label = np.zeros((8, 16, 16), np.uint8)
        label[2:5, 3:7, 3:7] = 1
        label[2:4, 10:12, 10:12] = 1
        sitk.WriteImage(sitk.GetImageFromArray(label), str(labels / f"case{i}.nii.gz"))
    setup = Setup(dataset="Dataset001_X", configuration="3d_fullres", out=str(tmp_path / "out"),
                  env={**os.environ, "nnUNet_results": str(tmp_path / "res"),
                       "FAKE_PREDICTIONS": str(labels)},
                  bin=str(fake), device="cpu", test_images=str(images), test_labels=str(labels),
                  labels=[1], lesion_labels=[1])
    ok, broken = Run("nnUNetTrainerGood", 0), Run("nnUNetTrainerBroken", 0)
    results = run_submitit(setup, [ok, broken], executor="local", time_min=10)
    assert results[0]["trainer"] == "nnUNetTrainerGood" and not results[0].get("failed")
    lesions = results[0]["evaluation"]["lesions.json"]["summary"][0]
    assert (lesions["n_gt"], lesions["tp"], lesions["fp"]) == (4, 4, 0)  # the prediction is the truth
    assert (tmp_path / "out" / "runs" / "nnUNetTrainerGood_fold0.json").is_file()
    assert results[1]["failed"] and results[1]["step"] == "train"
    assert "deliberately broken" in results[1]["log_tail"]
    assert list((tmp_path / "out" / "submitit").iterdir())  # submitit's own job folders
