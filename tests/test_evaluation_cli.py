"""Folder evaluation and the ``segbalance evaluate`` command: matching, geometry checks, outputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from segbalance.evaluation import evaluate_folders

SPACING_ZYX = (2.0, 0.9, 0.8)


def _write(path, arr, spacing_zyx=SPACING_ZYX, origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))


def _label(shift=0, lesion=True):
    a = np.zeros((8, 16, 16), np.uint8)
    a[2:6, 3:12, 3 + shift:12 + shift] = 1
    if lesion:
        a[3:5, 6:8, 6:8] = 2
    return a


@pytest.fixture
def folders(tmp_path):
    gt, p1, p2 = tmp_path / "gt", tmp_path / "ce", tmp_path / "dfl"
    for d in (gt, p1, p2):
        d.mkdir()
    _write(gt / "case_a.nii.gz", _label())
    _write(gt / "case_b.nrrd", _label(lesion=False))
    _write(gt / "case_c.mhd", _label())
    _write(p1 / "case_a.nii.gz", _label(shift=1))
    _write(p1 / "case_b.nii.gz", _label())  # false-positive lesion
    _write(p1 / "case_z.nii.gz", _label())  # extra
    (p1 / "plans.json").write_text("{}")  # nnU-Net side files are ignored
    (p1 / "case_a.pkl").write_bytes(b"x")
    for c in ("case_a", "case_b", "case_c"):
        _write(p2 / f"{c}.nii.gz", _label(lesion=False))  # every lesion missed
    return gt, p1, p2


def test_missing_and_extra_cases_listed_and_scored(folders):
    gt, p1, _ = folders
    res = evaluate_folders(gt, p1, progress=False)
    assert res.missing == ["case_c"] and res.extra == ["case_z"]
    flags = {(r["case"], r["label"]): r["flag"] for r in res.rows}
    assert flags[("case_c", 1)] == "missing_prediction" and flags[("case_b", 2)] == "false_positive"
    miss = next(r for r in res.rows if r["case"] == "case_c" and r["label"] == 1)
    assert miss["dice"] == 0.0
    res2 = evaluate_folders(gt, p1, allow_missing=True, progress=False)
    assert res2.missing == ["case_c"] and {r["case"] for r in res2.rows} == {"case_a", "case_b"}


def test_parallel_equals_serial(folders):
    gt, p1, _ = folders
    serial = evaluate_folders(gt, p1, progress=False, lesions={})
    parallel = evaluate_folders(gt, p1, jobs=2, progress=False, lesions={})  # spawned process pool
    assert json.dumps(parallel.rows) == json.dumps(serial.rows)
    assert json.dumps(parallel.lesion_cases) == json.dumps(serial.lesion_cases) and serial.lesion_cases
    assert json.dumps(parallel.lesions) == json.dumps(serial.lesions) and serial.lesions


def test_geometry_mismatch_names_both_files(folders, tmp_path):
    gt, _, _ = folders
    bad = tmp_path / "bad"
    bad.mkdir()
    _write(bad / "case_a.nii.gz", _label(), spacing_zyx=(2.0, 0.9, 0.5))
    with pytest.raises(ValueError, match=r"bad/case_a\.nii\.gz.*case_a\.nii\.gz"):
        evaluate_folders(gt, bad, allow_missing=True, progress=False)
    _write(bad / "case_a.nii.gz", np.zeros((8, 16, 15), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        evaluate_folders(gt, bad, allow_missing=True, progress=False)
    with pytest.raises(FileNotFoundError, match="nope"):
        evaluate_folders(gt, tmp_path / "nope")


def test_cli_two_methods_outputs(folders, tmp_path, capsys):
    from segbalance.cli import main

    gt, p1, p2 = folders
    out = tmp_path / "out"
    rc = main(["evaluate", "--gt", str(gt), "--pred", f"CE={p1}", "--pred", f"DFL={p2}", "--out", str(out),
               "--nsd-tolerance", "1=2.0,2=1.0"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| CE | 1 |" in text and "case_c" in text
    rows = list(csv.DictReader(open(out / "per_case.csv")))
    assert len(rows) == 2 * 3 * 2  # methods × cases × labels, none dropped
    summary = json.loads((out / "summary.json").read_text())["summary"]
    dfl_lesion = next(e for e in summary if e["method"] == "DFL" and e["label"] == 2)
    # two GT lesions missed (Dice 0) in the mean; case_b has no lesion anywhere: excluded and counted
    assert dfl_lesion["dice"] == {"mean": 0.0, "std": 0.0, "n": 2}
    assert dfl_lesion["flags"] == {"missed": 2, "both_empty": 1}
    assert {r["nsd_tolerance"] for r in rows if r["label"] == "2"} == {"1.0"}
    for name in ("summary.md", "per_case.json", "box_dice.png", "recall_vs_iou.png"):
        assert (out / name).stat().st_size > 0


def test_cli_resume_reuses_unchanged_and_recomputes_changed(folders, tmp_path, capsys):
    from segbalance.cli import main

    gt, _, p2 = folders
    out = tmp_path / "out"
    args = ["evaluate", "--gt", str(gt), "--pred", f"DFL={p2}", "--out", str(out), "--no-plots"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0
    assert "reusing results" in capsys.readouterr().out
    # the cache is written atomically (a killed run cannot leave a half-written one): only the final file
    assert sorted(p.name for p in (out / ".cache").iterdir()) == ["DFL.json"]
    _write(p2 / "case_a.nii.gz", _label())  # now the lesion of case_a is found: must be recomputed
    assert main(args) == 0
    assert "reusing results" not in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "per_case.csv")))
    flag = next(r["flag"] for r in rows if r["case"] == "case_a" and r["label"] == "2")
    assert flag == "ok"


def test_cli_lesion_outputs(folders, tmp_path, capsys):
    from segbalance.cli import main

    gt, p1, p2 = folders
    out = tmp_path / "out"
    rc = main(["evaluate", "--gt", str(gt), "--pred", f"CE={p1}", "--pred", f"DFL={p2}", "--out", str(out),
               "--lesion-labels", "2"])
    assert rc == 0
    assert "GT lesions" in capsys.readouterr().out
    per_case = list(csv.DictReader(open(out / "lesions_per_case.csv")))
    assert {(r["method"], r["case"]) for r in per_case} == {(m, c) for m in ("CE", "DFL")
                                                             for c in ("case_a", "case_b", "case_c")}
    assert {r["label"] for r in per_case} == {"2"}
    dfl = [r for r in per_case if r["method"] == "DFL"]
    # DFL misses both GT lesions (case_a, case_c); case_b has none anywhere
    assert sorted((r["case"], r["n_gt"], r["tp"], r["flag"]) for r in dfl) == [
        ("case_a", "1", "0", "missed"), ("case_b", "0", "0", "both_empty"), ("case_c", "1", "0", "missed")]
    ce_b = next(r for r in per_case if r["method"] == "CE" and r["case"] == "case_b")
    assert ce_b["fp"] == "1" and ce_b["fp_components"] == "1"
    # the 2x2x2-voxel false-positive lesion, in mm³ with the GT spacing
    assert float(ce_b["fp_volume_mm3"]) == pytest.approx(8 * 2.0 * 0.9 * 0.8)
    lesions = list(csv.DictReader(open(out / "lesions.csv")))
    assert {r["kind"] for r in lesions} == {"gt", "pred"} and all(r["label"] == "2" for r in lesions)
    lesions_json = json.loads((out / "lesions.json").read_text())
    settings = lesions_json["settings"]
    keys = ("labels", "connectivity", "matching", "iou_threshold", "size_bins_mm3")
    assert {k: settings[k] for k in keys} == {"labels": [2], "connectivity": 26, "matching": "iou",
                                              "iou_threshold": 0.5, "size_bins_mm3": [100.0, 1000.0]}
    assert "one-to-one by IoU >= 0.5" in settings["rule"]
    summary = lesions_json["summary"]
    dfl_s = next(e for e in summary if e["method"] == "DFL")
    assert (dfl_s["n_gt"], dfl_s["tp"], dfl_s["pooled"]["sensitivity"]) == (2, 0, 0.0)
    ce_s = next(e for e in summary if e["method"] == "CE")
    assert (ce_s["n_gt"], ce_s["tp"], ce_s["fp"]) == (2, 1, 1)  # case_a found, case_c no file, case_b FP
    assert "lesion_summary" in json.loads((out / "summary.json").read_text())
    assert "GT lesions" in (out / "summary.md").read_text()
    assert (out / "detection_vs_size.png").stat().st_size > 0


def _one_line_error(capsys, argv, *needles):
    from segbalance.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def test_cli_refuses_unsafe_method_names(folders, tmp_path, capsys):
    gt, p1, _ = folders
    out = tmp_path / "out"
    for name in ("../../x", "a/b", "..", ".hidden", "a\\b", ""):
        _one_line_error(capsys, ["evaluate", "--gt", str(gt), "--pred", f"{name}={p1}", "--out", str(out)],
                        "not a safe file name")
    assert not out.exists() and not (tmp_path.parent / "x.json").exists()
    # a bare folder is named after its last component
    from segbalance.evaluation.cli import parse_pred

    assert parse_pred([f"{p1}/"]) == {"ce": f"{p1}/"}


def test_cli_refuses_probabilities_and_negative_labels(folders, tmp_path, capsys):
    gt, _, _ = folders
    bad = tmp_path / "bad"
    bad.mkdir()
    img = sitk.GetImageFromArray(_label().astype(np.float32) * 0.4)
    img.SetSpacing(tuple(float(s) for s in reversed(SPACING_ZYX)))
    sitk.WriteImage(img, str(bad / "case_a.nii.gz"))
    args = ["evaluate", "--gt", str(gt), "--pred", f"P={bad}", "--out", str(tmp_path / "o"),
            "--allow-missing"]
    _one_line_error(capsys, args, "case_a.nii.gz", "integers")
    neg = _label().astype(np.int16)
    neg[0, 0, 0] = -1
    img = sitk.GetImageFromArray(neg)
    img.SetSpacing(tuple(float(s) for s in reversed(SPACING_ZYX)))
    sitk.WriteImage(img, str(bad / "case_a.nii.gz"))
    _one_line_error(capsys, args, "case_a.nii.gz", ">= 0")
    # float files holding whole numbers are accepted
    img = sitk.GetImageFromArray(_label().astype(np.float32))
    img.SetSpacing(tuple(float(s) for s in reversed(SPACING_ZYX)))
    sitk.WriteImage(img, str(bad / "case_a.nii.gz"))
    from segbalance.cli import main

    assert main(args + ["--no-plots"]) == 0


def test_cli_missing_folders_one_line(folders, tmp_path, capsys):
    _, p1, _ = folders
    _one_line_error(capsys, ["evaluate", "--gt", str(tmp_path / "nogt"), "--pred", f"CE={p1}", "--out",
                             str(tmp_path / "o")], "--gt", "nogt")
    gt = folders[0]
    _one_line_error(capsys, ["evaluate", "--gt", str(gt), "--pred", f"CE={tmp_path / 'nopred'}", "--out",
                             str(tmp_path / "o")], "nopred")
    _one_line_error(capsys, ["evaluate", "--gt", str(gt), "--pred", f"CE={p1}", "--out", str(tmp_path / "o"),
                             "--size-bins", "1000,100"], "--size-bins")


def _strict_files(out):
    """Every JSON file in ``out`` (and its cache) parsed with a strict parser."""
    from segbalance.evaluation.strict_json import loads_strict

    files = sorted(out.glob("*.json")) + sorted((out / ".cache").glob("*.json"))
    assert files
    return {p.name: loads_strict(p.read_text()) for p in files}


def _write_scores(path, arr, spacing_zyx=SPACING_ZYX):
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    sitk.WriteImage(img, str(path))


def test_cli_detection_scores_strict_json_and_settings(folders, tmp_path, capsys):
    from segbalance.cli import main

    gt, p1, p2 = folders
    s1, s2 = tmp_path / "s_ce", tmp_path / "s_dfl"
    s1.mkdir()
    s2.mkdir()
    # CE: a detection map of constant blobs: case_a's lesion at 0.9, a FP at 0.4 in case_b; case_c no file
    a = np.zeros((8, 16, 16), np.float32)
    a[3:5, 6:8, 6:8] = 0.9
    _write_scores(s1 / "case_a.nii.gz", a)
    b = np.zeros((8, 16, 16), np.float32)
    b[3:5, 12:14, 12:14] = 0.4
    _write_scores(s1 / "case_b.nii.gz", b)
    # DFL: nnU-Net .npz probabilities (C, z, y, x); label maps beside them are ignored
    for c in ("case_a", "case_b", "case_c"):
        probs = np.zeros((3, 8, 16, 16), np.float32)
        probs[0] = 1.0
        if c == "case_c":
            probs[2, 3:5, 6:8, 6:8] = 0.6  # case_c's lesion found at 0.6 in channel 2
        np.savez_compressed(s2 / f"{c}.npz", probabilities=probs)
        _write(s2 / f"{c}.nii.gz", _label(lesion=False))
    out = tmp_path / "out"
    rc = main(["evaluate", "--gt", str(gt), "--pred", f"CE={p1}", "--pred", f"DFL={p2}", "--out", str(out),
               "--lesion-labels", "2", "--scores", f"CE={s1}", "--scores", f"DFL={s2}", "--hit-iou", "0.1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "case AUROC" in printed and "without a score map" in printed
    js = _strict_files(out)
    assert {"detection.json", "summary.json", "lesions.json", "per_case.json", "CE.json"} <= set(js)
    det = js["detection.json"]
    assert det["settings"]["hit_iou"] == 0.1 and det["settings"]["score_floor"] == 0.0
    res = {e["method"]: e for e in det["results"]}
    ce, dfl = res["CE"], res["DFL"]
    # CE: 2 GT lesions (a, c), found a at 0.9; FP 0.4 in b; c has no score file
    assert (ce["n_gt_lesions"], ce["tp"], ce["fp"], ce["n_cases"]) == (2, 1, 1, 3)
    assert ce["sensitivity_at_fp"]["0.125"] == 0.5 and ce["ap"] == 0.5
    # case scores a 0.9 (+), b 0.4 (-), c 0 (+): AUROC = 1/2
    assert ce["auroc"] == 0.5
    assert dfl["tp"] == 1 and dfl["fp"] == 0 and dfl["ap"] == 0.5
    assert js["summary.json"]["case_pairing"]["CE"]["missing_scores"] == ["case_c"]
    assert "matching" not in js["summary.json"]
    # every setting a figure depends on is stated
    st = js["summary.json"]["settings"]
    assert st["spacing"]["used"] == [{"spacing_mm_zyx": [2.0, 0.9, 0.8], "cases": 3}]
    assert st["lesions"]["connectivity"] == 26 and st["detection"]["hit_iou"] == 0.1
    md = (out / "summary.md").read_text()
    for needle in ("26-connectivity", "one-to-one by IoU >= 0.5", "size-bin edges 100, 1000 mm³",
                   "2 × 0.9 × 0.8 mm", "hit = IoU >= 0.1", "score > 0"):
        assert needle in md, needle
    assert (out / "froc.png").stat().st_size > 0
    # the null values: CE's recall of case_b (no GT lesion) is NaN -> null, and null_means says why
    rows = js["per_case.json"]["rows"]
    assert any(r["recall"] is None for r in rows)
    assert "per case and class" in js["per_case.json"]["null_means"]
    # resume from the strict cache gives the same detection.json
    before = (out / "detection.json").read_text()
    assert main(["evaluate", "--gt", str(gt), "--pred", f"CE={p1}", "--pred", f"DFL={p2}", "--out", str(out),
                 "--lesion-labels", "2", "--scores", f"CE={s1}", "--scores", f"DFL={s2}", "--hit-iou", "0.1",
                 "--no-plots"]) == 0
    assert "reusing results" in capsys.readouterr().out
    assert (out / "detection.json").read_text() == before


def test_cli_scores_need_a_method_and_a_class(folders, tmp_path, capsys):
    gt, p1, _ = folders
    base = ["evaluate", "--gt", str(gt), "--pred", f"CE={p1}", "--out", str(tmp_path / "o")]
    _one_line_error(capsys, base + ["--scores", f"X={p1}", "--lesion-labels", "2"], "no --pred X")
    _one_line_error(capsys, base + ["--scores", f"CE={p1}"], "--lesion-labels")


def test_size_bin_of_a_100_mm3_lesion_in_a_nifti(tmp_path):
    """1.6 mm is stored as float32 in NIfTI (1.60000002…); read as the file states it (1.6), a lesion of
    250 voxels of 1.6 × 0.5 × 0.5 mm is exactly 100 mm³ and falls in the 100-1000 bin, as the docs say."""
    from segbalance.evaluation import evaluate_folders

    sp = (1.6, 0.5, 0.5)
    lesion = np.zeros((6, 20, 20), np.uint8)
    lesion[0:5, 5:15, 5:10] = 1  # 250 voxels = 100.0 mm³
    for d in ("gt", "pred"):
        (tmp_path / d).mkdir()
        img = sitk.GetImageFromArray(lesion)
        img.SetSpacing(tuple(reversed(sp)))
        sitk.WriteImage(img, str(tmp_path / d / "c.nii.gz"))
    res = evaluate_folders(tmp_path / "gt", tmp_path / "pred", progress=False, lesions={})
    row = next(r for r in res.lesions if r["kind"] == "gt")
    assert row["volume_mm3"] == pytest.approx(100.0) and row["size_bin"] == "100to1000"
    assert res.spacing["c"] == [1.6, 0.5, 0.5]  # 1.6 is 1.60000002384 in the file's float32


def test_evaluate_imports_neither_torch_nor_monai(folders, tmp_path):
    """A cold ``segbalance evaluate`` must not pay for torch or MONAI (7-10 s of a 12 s start before): its
    metrics are MONAI's numbers computed without them (MONAI only for --subvoxels)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    gt, p1, _ = folders
    root = Path(__file__).resolve().parents[1]
    argv = ["evaluate", "--gt", str(gt), "--pred", f"CE={p1}", "--out", str(tmp_path / "o")]
    code = (f"import sys; from segbalance.cli import main; rc = main({argv!r}); "
            "print(rc, sorted(m for m in ('torch', 'monai', 'nnunetv2') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    assert out == "0 []", out
