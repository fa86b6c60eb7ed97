"""segbalance demo: the per-class metrics against hand-computed values, and a tiny end-to-end run."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from segbalance.cli import main
from segbalance.demo import case_metrics, format_table, summarise
from segbalance.evaluation import image_diagonal_mm

SPACING = (2.0, 1.0, 1.0)


def _volume():
    label = np.zeros((10, 20, 20), np.uint8)
    label[2:8, 4:14, 4:14] = 1  # 6*10*10 = 600 voxels
    label[4:6, 16:18, 16:18] = 2  # 8 voxels
    return label


def test_evaluate_perfect_prediction():
    label = _volume()
    res = case_metrics(label, label, SPACING)
    for k in (1, 2):
        assert res[k]["dice"] == pytest.approx(1.0) and res[k]["iou"] == pytest.approx(1.0)
        assert res[k]["hd95"] == pytest.approx(0.0) and res[k]["nsd"] == pytest.approx(1.0)
        assert (res[k]["lesions_gt"], res[k]["lesions_found"], res[k]["lesions_fp"]) == (1, 1, 0)


def test_evaluate_shifted_organ_and_missed_lesion():
    label = _volume()
    pred = np.zeros_like(label)
    pred[2:8, 5:15, 4:14] = 1  # organ shifted one voxel (1 mm) along y; lesion missed
    pred[0, 0, 0:2] = 2  # a false-positive lesion elsewhere
    pred_missed = pred.copy()
    pred_missed[0, 0, 0:2] = 0
    res = case_metrics(pred_missed, label, SPACING)
    inter = 6 * 9 * 10
    assert res[1]["dice"] == pytest.approx(2 * inter / 1200)
    assert res[1]["iou"] == pytest.approx(inter / (1200 - inter))
    assert res[1]["hd95"] == pytest.approx(1.0)  # every surface point is at most 1 mm from the other surface
    assert res[1]["nsd"] == pytest.approx(1.0)  # all within the 2 mm tolerance
    # the one evaluation rule (segbalance.evaluation.metrics): a missed class scores the image diagonal
    assert res[2]["dice"] == 0.0 and res[2]["nsd"] == 0.0 and res[2]["flag"] == "missed"
    assert res[2]["hd95"] == pytest.approx(image_diagonal_mm(label.shape, SPACING))
    assert (res[2]["lesions_gt"], res[2]["lesions_found"]) == (1, 0)
    fp = case_metrics(pred, label, SPACING)
    assert (fp[2]["lesions_gt"], fp[2]["lesions_found"], fp[2]["lesions_fp"]) == (1, 0, 1)
    summary = summarise([res, case_metrics(label, label, SPACING), fp])
    assert summary[2]["missed"] == 1  # only the case with no lesion voxel predicted at all
    assert (summary[2]["lesions_gt"], summary[2]["lesions_found"], summary[2]["lesions_fp"]) == (3, 1, 1)
    assert summary[2]["lesions_missed"] == 2
    assert summary[1]["dice"] == pytest.approx((2 * 2 * inter / 1200 + 1) / 3)
    rows = [{"loss": "ce", "class": "lesion", **summary[2]}]
    assert "1/2/1 of 3" in format_table(rows) and "lesions found/missed/FP" in format_table(rows)


@pytest.mark.slow
def test_demo_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    with pytest.warns(UserWarning, match="'not_a_loss' is not registered"):
        assert main(["demo", "--tiny", "--out", str(out), "--losses", "ce", "boundary", "not_a_loss"]) == 0
    printed = capsys.readouterr().out
    assert "lesion" in printed and "organ" in printed
    assert "lesions found/missed/FP" in printed and "lesions.png" in printed
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["loss"], r["class"]) for r in rows] == [
        ("ce", "organ"),
        ("ce", "lesion"),
        ("boundary", "organ"),
        ("boundary", "lesion"),
    ]
    for r in rows:
        assert 0.0 <= float(r["dice"]) <= 1.0
        assert 0 <= int(r["lesions_found"]) <= int(r["lesions_gt"])
        assert int(r["lesions_found"]) + int(r["lesions_missed"]) == int(r["lesions_gt"])
    assert int(rows[1]["lesions_gt"]) >= 2  # several lesions per phantom
    assert (out / "results.png").stat().st_size > 1000
    assert (out / "lesions.png").stat().st_size > 1000
    # rerun: finished runs are reused, not retrained
    mtime = (out / "runs" / "ce" / "last.pt").stat().st_mtime_ns
    assert main(["demo", "--tiny", "--out", str(out), "--losses", "ce"]) == 0
    assert (out / "runs" / "ce" / "last.pt").stat().st_mtime_ns == mtime


def test_demo_rejects_only_unknown_losses(tmp_path, capsys):
    with pytest.warns(UserWarning, match="'nope'"):
        assert main(["demo", "--tiny", "--out", str(tmp_path), "--losses", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "losses: none of the requested losses" in err


def test_lesion_outcomes_match_the_lesion_counts_and_the_figure_is_written(tmp_path):
    from segbalance.evaluation import evaluate_lesions
    from segbalance.evaluation.outcomes import busiest_slice, lesion_outcomes, plot_lesion_outcomes

    label = _volume()
    label[2, 2, 2:4] = 2  # a second, 2-voxel lesion on another slice
    pred = label.copy()
    pred[4:6, 16:18, 16:18] = 1  # the first lesion missed
    pred[8, 0:2, 0:2] = 2  # a false positive
    o = lesion_outcomes(pred, label, 2)
    c = next(r for r in evaluate_lesions(pred, label, SPACING, labels=[2]).classes)
    assert (o.n_found, o.n_missed, o.n_false_positive) == (c["tp"], c["fn"], c["fp"]) == (1, 1, 1)
    assert o.found.sum() == 2 and o.missed.sum() == 8 and o.false_positive.sum() == 4
    assert not (o.found & o.missed).any() and not (o.false_positive & (label == 2)).any()
    assert busiest_slice(label, 2) == 4  # one lesion per slice: the most lesion voxels, lowest index
    image = np.random.default_rng(0).normal(size=label.shape)
    both = {"a": o, "b": lesion_outcomes(label, label, 2)}
    plot_lesion_outcomes(image, both, 4, tmp_path / "l.png", SPACING)
    assert (tmp_path / "l.png").stat().st_size > 1000
