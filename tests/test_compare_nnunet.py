"""benchmarks/compare_nnunet.py: the summary arithmetic, the clean start, the budget trainers, and (slow) a
smoke run through the real ``nnUNetv2_*`` commands whose lesion counts are checked against an independent
evaluation of the same prediction files (nibabel + ``scipy.ndimage.label``, not segbalance's cc3d path)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("nnunetv2")


@pytest.fixture(scope="module")
def cmp():
    spec = importlib.util.spec_from_file_location("compare_nnunet", ROOT / "benchmarks" / "compare_nnunet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lesion_summary(label: int, n_gt: int, tp: int, fp: int, fn_components: int, sens: float) -> dict:
    stat = {"mean": sens, "std": 0.0, "n": 1}
    return {"label": label, "n_gt": n_gt, "tp": tp, "fp": fp, "fn": n_gt - tp, "fn_components": fn_components,
            "sensitivity": stat, "precision": stat, "f1": stat, "lesion_dice": stat, "pq": stat,
            "by_size": {"lt100": {"n_gt": n_gt, "tp": tp}}}


def _record(trainer: str, fold: int, dice: float, n_gt: int, tp: int, fp: int, touched: int) -> dict:
    voxel = [{"label": 1, "dice": {"mean": 0.9}, "hd95": {"mean": 1.0}},
             {"label": 2, "dice": {"mean": dice}, "hd95": {"mean": 3.0}}]
    return {"trainer": trainer, "fold": fold, "evaluation": {
        "summary.json": {"summary": voxel},
        "lesions.json": {"summary": [_lesion_summary(1, 1, 1, 0, 0, 1.0),
                                     _lesion_summary(2, n_gt, tp, fp, n_gt - touched, tp / n_gt)]}}}


def test_aggregate_means_stds_and_sums_over_folds(cmp):
    rows = cmp.aggregate([_record("A", 0, 0.8, 10, 6, 2, 9), _record("A", 1, 0.6, 12, 3, 0, 5),
                          _record("B", 0, 0.5, 10, 0, 1, 0)])
    a, b = rows
    assert a["trainer"] == "A" and a["folds"] == [0, 1]
    assert a["dice_lesion"]["mean"] == pytest.approx(0.7) and a["dice_lesion"]["std"] == pytest.approx(0.1)
    counts = (a["lesions_gt"], a["lesions_found"], a["lesions_missed"], a["false_positive_lesions"])
    assert counts == (22, 9, 13, 2)
    assert a["lesions_found_per_fold"] == [6, 3] and a["lesions_touched"] == 14
    assert a["lesion_sensitivity"]["mean"] == pytest.approx((0.6 + 0.25) / 2)
    assert a["by_size"] == {"lt100": {"n_gt": 22, "found": 9}}
    assert (b["lesions_found"], b["lesions_touched"], b["dice_lesion"]["std"]) == (0, 0, 0.0)
    rows[1]["lesion_precision"] = cmp._mean_std([float("nan"), 0.5])  # one fold predicted no lesion
    table = cmp.markdown(rows)
    assert "| 0.500 ± 0.000 (n=1) |" in table
    assert "| A | 0.900 ± 0.000 | 0.700 ± 0.100 | 3.0 ± 0.0 | 0.425 ± 0.175 |" in table
    assert table.rstrip().endswith("| 0 / 10 / 1 |")


def test_versus_baseline_pairs_folds_and_flags_only_consistent_differences(cmp):
    rows = cmp.aggregate([
        _record("nnUNetTrainer", 0, 0.60, 10, 5, 0, 9), _record("nnUNetTrainer", 1, 0.70, 10, 6, 0, 9),
        _record("nnUNetTrainer", 2, 0.65, 10, 7, 0, 9),
        _record("Up", 0, 0.80, 10, 8, 0, 9), _record("Up", 1, 0.85, 10, 9, 0, 9),
        _record("Up", 2, 0.90, 10, 9, 0, 9),
        _record("Mixed", 0, 0.70, 10, 4, 0, 9), _record("Mixed", 1, 0.60, 10, 8, 0, 9),
        _record("Mixed", 2, 0.66, 10, 7, 0, 9)])
    up, mixed = cmp.versus_baseline(rows)
    assert up["trainer"] == "Up" and up["dice_lesion"]["diffs"] == pytest.approx([0.2, 0.15, 0.25])
    assert up["dice_lesion"]["mean"] == pytest.approx(0.2) and up["dice_lesion"]["exceeds"]
    assert up["lesions_found"]["diffs"] == [3, 3, 2] and up["lesions_found"]["exceeds"]
    assert not up["dice_organ"]["exceeds"]  # no difference at all
    assert mixed["dice_lesion"]["diffs"] == pytest.approx([0.1, -0.1, 0.01])
    assert not mixed["dice_lesion"]["exceeds"]
    # paired by fold number: a trainer run on fold 1 only is compared on fold 1 only, and never "exceeds"
    one = cmp.versus_baseline(cmp.aggregate([_record("nnUNetTrainer", 0, 0.1, 10, 1, 0, 9),
                                             _record("nnUNetTrainer", 1, 0.5, 10, 5, 0, 9),
                                             _record("Late", 1, 0.9, 10, 9, 0, 9)]))[0]
    assert one["dice_lesion"]["folds"] == [1] and one["dice_lesion"]["diffs"] == pytest.approx([0.4])
    assert not one["dice_lesion"]["exceeds"]
    assert cmp.versus_baseline(cmp.aggregate([_record("Late", 1, 0.9, 10, 9, 0, 9)])) == []
    assert "| Up | +0.000 ± 0.000 | +0.200 ± 0.041 * |" in cmp.markdown_versus([up, mixed])


def test_start_clean_removes_what_an_older_setup_made(cmp, tmp_path, capsys, monkeypatch):
    spec = cmp.BUDGETS["smoke"]
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "nnUNetTrainer_fold0.json").write_text("{}")
    cmp.start_clean(tmp_path, spec)  # no setup.json: a work folder of unknown origin is not trusted
    assert not (tmp_path / "runs").exists() and "removing runs" in capsys.readouterr().out
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "kept.json").write_text("{}")
    cmp.start_clean(tmp_path, spec)  # same setup: everything is reused
    assert (tmp_path / "runs" / "kept.json").is_file()
    cmp.start_clean(tmp_path, {**spec, "epochs": spec["epochs"] + 1})  # another budget: nothing is reused
    assert not (tmp_path / "runs").exists()
    (tmp_path / "raw").mkdir()
    cmp.start_clean(tmp_path, spec)
    digest = cmp.phantom_digest()
    assert json.loads((tmp_path / "setup.json").read_text())["phantoms_sha256"] == digest
    (tmp_path / "raw").mkdir()
    original = cmp.phantom_case

    def changed_generator(seed):  # same settings, other output: a changed segbalance.synthetic
        ph = original(seed)
        ph.image[0, 0, 0] += 1
        return ph

    monkeypatch.setattr(cmp, "phantom_case", changed_generator)
    assert cmp.phantom_digest() != digest
    cmp.start_clean(tmp_path, spec)  # a dataset written by the older generator is not reused
    assert not (tmp_path / "raw").exists()


def test_budget_trainers_import_nnunet_and_segbalance_trainers(cmp, tmp_path):
    names = cmp.write_budget_trainers(tmp_path, ["nnUNetTrainer", "nnUNetTrainerDFL", "nnUNetTrainerCELoss"],
                                      "smoke", cmp.BUDGETS["smoke"])
    assert names["nnUNetTrainerCELoss"] == "nnUNetTrainerCELoss_cmpsmoke"
    namespace: dict = {}
    exec(compile((tmp_path / "segbalance_compare_smoke.py").read_text(), "budget", "exec"), namespace)
    from nnunetv2.training.nnUNetTrainer.variants.loss.nnUNetTrainerCELoss import nnUNetTrainerCELoss

    assert issubclass(namespace["nnUNetTrainerCELoss_cmpsmoke"], nnUNetTrainerCELoss)
    assert namespace["nnUNetTrainerDFL_cmpsmoke"].__mro__[1].__name__ == "nnUNetTrainerDFL"
    # nnU-Net's own trainers get the guard and the diagnostics every segbalance trainer has
    from segbalance.trainers.diagnostics import RareClassDiagnostics
    from segbalance.trainers.guard import NeverPredictedGuard

    for name in ("nnUNetTrainer_cmpsmoke", "nnUNetTrainerCELoss_cmpsmoke", "nnUNetTrainerDFL_cmpsmoke"):
        assert issubclass(namespace[name], NeverPredictedGuard)
        assert issubclass(namespace[name], RareClassDiagnostics)
    with pytest.raises(SystemExit, match="nnUNetTrainerNoSuch"):
        cmp.trainer_import("nnUNetTrainerNoSuch")


def test_budget_trainers_set_torch_threads_only_when_asked(cmp, tmp_path, monkeypatch):
    """``--torch-threads`` reaches the trainer through the environment; otherwise nnU-Net sets the threads."""
    import torch

    cmp.write_budget_trainers(tmp_path, ["nnUNetTrainer"], "smoke", cmp.BUDGETS["smoke"])
    source = (tmp_path / "segbalance_compare_smoke.py").read_text()
    init = source.split("def __init__", 1)[1].split("self.num_epochs", 1)[0]
    threads_before = torch.get_num_threads()
    try:
        for asked, expected in (("1", 1), ("", threads_before)):
            torch.set_num_threads(threads_before)
            monkeypatch.setenv(cmp.TORCH_THREADS_ENV, asked)
            body = "\n".join(line[8:] for line in init.splitlines()[2:])  # the lines after super().__init__
            exec(compile(body, "init", "exec"), {"os": __import__("os"), "torch": torch})
            assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(threads_before)
    with pytest.raises(SystemExit) as exc:
        cmp.main(["--torch-threads", "0", "--work", str(tmp_path / "never")])
    assert exc.value.code == 2 and not (tmp_path / "never").exists()
    env = cmp.nnunet_env(tmp_path, tmp_path / "ext", "cpu", torch_threads=1)
    assert env[cmp.TORCH_THREADS_ENV] == "1"
    assert cmp.TORCH_THREADS_ENV not in cmp.nnunet_env(tmp_path, tmp_path / "ext", "cpu")


def test_setup_lock_excludes_a_concurrent_invocation(cmp, tmp_path):
    """While one invocation makes the shared setup another process cannot take the lock; afterwards it can."""
    import subprocess
    import sys

    pytest.importorskip("fcntl")
    probe = ("import fcntl, sys\nfh = open(sys.argv[1], 'w')\n"
             "try:\n    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n    sys.exit(3)\n")
    lock = str(tmp_path / ".setup.lock")
    with cmp.setup_lock(tmp_path):
        assert subprocess.run([sys.executable, "-c", probe, lock]).returncode == 3
    assert subprocess.run([sys.executable, "-c", probe, lock]).returncode == 0


@pytest.mark.slow
def test_smoke_budget_runs_nnunet_and_its_counts_match_an_independent_evaluation(cmp, tmp_path, capsys):
    trainers = ["nnUNetTrainer", "nnUNetTrainerDFL"]
    out = tmp_path / "summary.json"
    argv = ["--budget", "smoke", "--trainers", "nnUNetTrainer", "DFL", "--folds", "0",
            "--work", str(tmp_path / "w"), "--json", str(out)]
    assert cmp.main(argv) == 0
    printed = capsys.readouterr().out
    assert "[1/2] nnUNetTrainer fold 0: done" in printed and "[2/2] nnUNetTrainerDFL fold 0: done" in printed
    summary = json.loads(out.read_text())
    assert summary["budget"]["name"] == "smoke" and summary["lesion_settings"]["iou_threshold"] == 0.5
    assert [r["trainer"] for r in summary["table"]] == trainers
    for run, row in zip(summary["runs"], summary["table"]):
        gt, pred = Path(run["gt"]), Path(run["predictions"])
        assert len(list(pred.glob("*.nii.gz"))) == cmp.BUDGETS["smoke"]["cases"][1]
        by_label = {s["label"]: s for s in run["evaluation"]["lesions.json"]["summary"]}
        for label in (1, 2):
            n_gt, tp, fp = cmp.independent_lesion_counts(gt, pred, label)
            assert (by_label[label]["n_gt"], by_label[label]["tp"], by_label[label]["fp"]) == (n_gt, tp, fp)
        assert (row["lesions_gt"], row["lesions_found"], row["false_positive_lesions"]) == \
            cmp.independent_lesion_counts(gt, pred, 2)
        assert row["lesions_gt"] >= cmp.BUDGETS["smoke"]["cases"][1]  # several lesions per test phantom
    # every run records its gradient balance per epoch, and the guard's end-of-training line appears exactly
    # when the lesion's pseudo-Dice was 0 in every epoch (2 epochs: shorter than K, so all of them)
    for run in summary["runs"]:
        rows = run["diagnostics"]
        assert [r["epoch"] for r in rows] == list(range(cmp.BUDGETS["smoke"]["epochs"]))
        assert all(r["samples"] >= 1 and len(r["push"]) == 2 for r in rows)
        log = (tmp_path / "w" / "smoke" / "logs" / f"train_{run['trainer']}_0.txt").read_text()
        never = all(r["pseudo_dice"][1] == 0 for r in rows)
        warned = "WARNING training ended with class 'lesion' (label 2) never predicted" in log
        assert warned == never, (run["trainer"], [r["pseudo_dice"] for r in rows])
        assert "WARNING training ended with class 'organ'" not in log or all(
            r["pseudo_dice"][0] == 0 for r in rows)
    # the shrunken plans are used, and the setup is marked complete only after they were written
    preprocessed = tmp_path / "w" / "smoke" / "preprocessed" / cmp.DATASET
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())["configurations"]["3d_fullres"]
    assert plans["patch_size"] == cmp.BUDGETS["smoke"]["plans"]["patch"]
    assert json.loads((preprocessed / ".complete.json").read_text())["plans"] == cmp.BUDGETS["smoke"]["plans"]
    # the summary's own recount agrees with evaluate for every run and class
    assert all(e["recounted"] and e["1"]["equal"] and e["2"]["equal"] for e in summary["recount"])
    # --reuse-only summarises what exists and leaves out the rest without training it
    partial = tmp_path / "partial.json"
    assert cmp.main([*argv[:-1], str(partial), "--reuse-only", "--folds", "0", "1"]) == 0
    assert "fold 1: no record, left out" in capsys.readouterr().out
    assert [(r["trainer"], r["fold"]) for r in json.loads(partial.read_text())["runs"]] == \
        [("nnUNetTrainer", 0), ("nnUNetTrainerDFL", 0)]
    # resumable: a second run reuses every record and retrains nothing
    records = {p.name: p.read_text() for p in (tmp_path / "w" / "smoke" / "runs").glob("*.json")}
    assert cmp.main(argv) == 0
    assert {p.name: p.read_text() for p in (tmp_path / "w" / "smoke" / "runs").glob("*.json")} == records


def test_mixed_lesion_setting_has_one_large_lesion_beside_small_ones(cmp, monkeypatch):
    """``--lesions mixed``: per phantom one lesion ≥ 1000 mm³ and the others < 1000 mm³ in the same organ;
    the default phantoms' largest lesions stay near 1000 mm³ or below. The setting enters setup.json."""
    import numpy as np
    from scipy import ndimage

    voxel = float(np.prod(cmp.SPACING))

    def volumes(seed):
        ph = cmp.phantom_case(seed)
        ids, n = ndimage.label(ph.label == 2, structure=np.ones((3, 3, 3)))
        assert ((ph.label == 2) <= (ndimage.binary_dilation(ph.label >= 1))).all()
        return sorted(np.bincount(ids.ravel())[1:] * voxel)

    default = [volumes(s) for s in range(3)]
    monkeypatch.setattr(cmp, "LESIONS", "mixed")
    mixed = [volumes(s) for s in range(3)]
    for v in mixed:
        assert v[-1] >= 1000 and all(x < 1000 for x in v[:-1]) and len(v) >= 4
        assert v[-1] > 5 * v[-2]
    assert all(v[-1] < 5 * v[-2] for v in default)  # default: no lesion dominates the others like that
    assert cmp.trainer_import("nnUNetTrainerBlob") is None and "nnUNetTrainerCCDiceCE" in cmp.TRAINERS
