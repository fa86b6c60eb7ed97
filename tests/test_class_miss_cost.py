"""benchmarks/class_miss_cost.py: the cost of a missed class, checked where it is known by hand."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        path = ROOT / "benchmarks" / "class_miss_cost.py"
        spec = importlib.util.spec_from_file_location("class_miss_cost", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_ce_cost_of_a_missed_class_is_its_voxel_share_times_the_logit_gap(bench):
    target = torch.zeros(1, 1, 4, 6, 6, dtype=torch.long)
    target[0, 0, 1:3, 1:5, 1:5] = 1  # 32 organ voxels
    target[0, 0, 2, 2:4, 2:4] = 2  # 4 lesion voxels inside it
    r = bench.costs(lambda logits, t: torch.nn.functional.cross_entropy(logits, t[:, 0]), target)
    n = target.numel()
    # CE of a voxel given logit +10 to a wrong class: log(e^10 + 2e^-10) + 10 ≈ 20; a right one: ≈ 0
    wrong = float(torch.logsumexp(torch.tensor([10.0, -10.0, -10.0]), 0) + 10)
    right = float(torch.logsumexp(torch.tensor([10.0, -10.0, -10.0]), 0) - 10)
    wrong -= right
    assert r["organ_missed"] == pytest.approx(28 * wrong / n, rel=1e-5)
    assert r["lesions_missed"] == pytest.approx(4 * wrong / n, rel=1e-5)
    assert r["ratio_organ_to_lesions"] == pytest.approx(7.0, rel=1e-5)


def test_patches_hold_every_class_and_the_baseline_is_nnunets_loss(bench):
    pytest.importorskip("nnunetv2")
    target = bench.patches([0])
    assert target.shape == (1, 1, *bench.PATCH)
    assert set(torch.unique(target).tolist()) == {0, 1, 2}
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss

    assert isinstance(bench.build(None), DC_and_CE_loss)
    r = bench.costs(bench.build("gdl"), target)
    assert r["lesions_missed"] > r["organ_missed"] > 0  # GDL's 1/volume² weights put the lesions first
