"""Distribution-based losses: hand-computed values, agreement with torch / MONAI / nnU-Net, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segbalance.monai_losses import get
from segbalance.monai_losses.distributed import all_reduce_sum, is_distributed
from segbalance.monai_losses.focal import log_one_minus_softmax
from segbalance.monai_losses.marginal import dice_bias

L3, L2 = math.log(3.0), math.log(2.0)


def tiny():
    """1×2×1×3 logits: voxel probabilities z = (.25,.75), (.75,.25), (2/3,1/3); labels 1, 1, 0."""
    logits = torch.tensor([[[[0.0, L3, L2]], [[L3, 0.0, 0.0]]]])
    target = torch.tensor([[[[1, 1, 0]]]])
    z = np.array([[0.25, 0.75, 2 / 3], [0.75, 0.25, 1 / 3]])  # (class, voxel)
    y = np.array([[0, 0, 1], [1, 1, 0]], dtype=float)
    return logits, target, z, y


def close(value, expected, tol=1e-5):
    assert float(value) == pytest.approx(float(expected), rel=tol, abs=tol)


# ---------------------------------------------------------------- hand-computed values
def test_hand_values_ce_family():
    logits, target, z, y = tiny()
    ce_v = -(y * np.log(z)).sum(0)  # per voxel: -ln .75, -ln .25, -ln 2/3
    close(get("ce")(logits, target), ce_v.mean())
    w = np.array([1.0, 3.0])
    wy = (y * w[:, None]).sum(0)
    close(get("wce", weight=[1.0, 3.0])(logits, target), (wy * ce_v).sum() / wy.sum())
    # inverse frequency: n = (1, 2), N = 3, two classes present -> w = (3/2, 3/4)
    wi = (y * np.array([1.5, 0.75])[:, None]).sum(0)
    close(get("wce")(logits, target), (wi * ce_v).mean())
    # class-balanced, beta=0.9: raw (1, .1/.19), normalised to sum to 2
    raw = np.array([1.0, 0.1 / 0.19])
    wc = raw / raw.sum() * 2
    close(get("cb_ce", beta=0.9)(logits, target), ((y * wc[:, None]).sum(0) * ce_v).mean())
    close(
        get("cb_ce", beta=0.9, samples_per_class=[2, 1])(logits, target),
        ((y * (np.array([0.1 / 0.19, 1.0]) / (1 + 0.1 / 0.19) * 2)[:, None]).sum(0) * ce_v).mean(),
    )


def test_hand_values_focal_dce_dfl():
    logits, target, z, y = tiny()
    focal = -(y * (1 - z) ** 2 * np.log(z)).sum(0).mean()
    close(get("focal")(logits, target), focal)
    close(
        get("focal", alpha=[2.0, 0.5])(logits, target),
        -(y * np.array([[2.0], [0.5]]) * (1 - z) ** 2 * np.log(z)).sum(0).mean(),
    )
    dce = (-y * np.log(z) + (1 - y) * np.log(1 + z)).sum(0).mean()
    close(get("dce")(logits, target), dce)
    dce2 = (-y * np.log(z) + 2.0 * (1 - y) * np.log(0.5 + z)).sum(0).mean()
    close(get("dce", alpha=0.5, beta=2.0)(logits, target), dce2)
    dfl = (-y * np.log(z) - (1 - y) * np.log(1 - z) + np.abs(y - z)).sum(0).mean()
    close(get("dfl")(logits, target), dfl)
    a, b, g, r = 0.5, 2.0, 2.0, 1.5
    dfl2 = (-y * np.log(z) - b * (1 - y) * np.log(r - z) + a * np.abs(y - z) ** g).sum(0).mean()
    close(get("dfl", alpha=a, beta=b, gamma=g, rho=r)(logits, target), dfl2)


def test_hand_values_recall():
    logits, target, z, y = tiny()
    # arg-max predictions 1, 0, 0 vs labels 1, 1, 0: TP=(1,1), FN=(0,1) -> w = (0, 1/2)
    ce_v = -(y * np.log(z)).sum(0)
    expected = (0.5 * ce_v[0] + 0.5 * ce_v[1] + 0.0 * ce_v[2]) / 3
    close(get("recall", eps=0.0)(logits, target), expected)


def test_hand_values_marginals():
    logits, target, z, y = tiny()
    y_hat, p_hat = y.mean(1), z.mean(1)  # temperature 1
    close(get("marginal_l1", temperature=1.0)(logits, target), np.abs(y_hat - p_hat).mean())
    kl = (y_hat * np.log(y_hat / p_hat)).sum()
    close(get("marginal_kl", temperature=1.0)(logits, target), kl)
    ce = -(y * np.log(z)).sum(0).mean()
    close(get("ce_l1", temperature=1.0)(logits, target), ce + np.abs(y_hat - p_hat).mean())
    close(get("ce_kl", temperature=1.0)(logits, target), ce + 0.1 * kl)
    close(get("ce_dicebias", temperature=1.0)(logits, target), ce + 0.01 * np.log(p_hat + y_hat).mean())
    # default temperature 10: proportions of softmax(10 u)
    u = logits[0, :, 0].double().numpy() * 10
    zt = np.exp(u) / np.exp(u).sum(0)
    close(get("marginal_l1")(logits, target), np.abs(y_hat - zt.mean(1)).mean())


# ---------------------------------------------------------------- agreement with references
def test_ce_matches_torch_with_ignore_index():
    logits = torch.randn(2, 3, 5, 6)
    target = torch.randint(0, 4, (2, 1, 5, 6))  # 3 = ignore
    ours = get("ce", ignore_index=3)(logits, target)
    close(ours, F.cross_entropy(logits, target[:, 0], ignore_index=3))


def test_wce_matches_torch_weighted_cross_entropy():
    logits = torch.randn(2, 3, 4, 5, 3)
    target = torch.randint(0, 3, (2, 1, 4, 5, 3))
    w = torch.tensor([0.2, 1.0, 5.0])
    close(get("wce", weight=w.tolist())(logits, target), F.cross_entropy(logits, target[:, 0], weight=w))
    counts = torch.bincount(target.flatten(), minlength=3).float()
    w_inv = counts.sum() / (3 * counts)
    close(get("wce")(logits, target), F.cross_entropy(logits, target[:, 0], weight=w_inv))


def test_binary_sigmoid_equals_bce():
    logits = torch.randn(2, 1, 6, 7)
    target = (torch.rand(2, 1, 6, 7) > 0.7).long()
    bce = F.binary_cross_entropy_with_logits(logits, target.float())
    close(get("ce")(logits, target), bce)
    w = torch.where(target == 1, 4.0, 1.0)
    bce_w = (F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none") * w).sum() / w.sum()
    close(get("wce", weight=[1.0, 4.0])(logits, target), bce_w)
    # focal with gamma=0 and dce/dfl reduce to their two-class forms of sigmoid probabilities
    close(get("focal", gamma=0.0)(logits, target), bce)


def test_focal_matches_monai_times_num_classes():
    monai_losses = pytest.importorskip("monai.losses")
    logits = torch.randn(2, 4, 5, 6, 3)
    target = torch.randint(0, 4, (2, 1, 5, 6, 3))
    alpha = [0.1, 1.0, 2.0, 3.0]
    for gamma in (0.0, 2.0, 0.5):
        ref = monai_losses.FocalLoss(use_softmax=True, to_onehot_y=True, gamma=gamma, weight=alpha)(
            logits, target
        )
        # MONAI averages over B·C·voxels; ours sums over classes and averages over voxels
        close(get("focal", gamma=gamma, alpha=alpha)(logits, target), 4 * float(ref))


def test_topk_matches_nnunet():
    robust = pytest.importorskip("nnunetv2.training.loss.robust_ce_loss")
    logits = torch.randn(2, 3, 8, 9, 5)
    target = torch.randint(0, 3, (2, 1, 8, 9, 5))
    for k in (10, 37.5):
        ref = robust.TopKLoss(k=k)(logits, target.float())
        close(get("topk", k=k)(logits, target), ref)


def test_topk_ignore_counts_valid_voxels_only():
    logits = torch.randn(1, 2, 10, 10)
    target = torch.randint(0, 2, (1, 1, 10, 10))
    target[..., :5, :] = 2  # half ignored
    ce = F.cross_entropy(logits, target[:, 0].clamp_max(1), reduction="none")[0, 5:].flatten()
    expected = torch.topk(ce, 5).values.mean()  # 10 % of the 50 valid voxels
    close(get("topk", ignore_index=2)(logits, target), expected)


def test_ohem_keep_ratio_and_threshold():
    logits = torch.randn(1, 3, 10, 10)
    target = torch.randint(0, 3, (1, 1, 10, 10))
    ce = F.cross_entropy(logits, target[:, 0], reduction="none").flatten()
    close(get("ohem")(logits, target), torch.topk(ce, 70).values.mean())
    # threshold variant: voxels with true-class probability below 0.7, at least min_kept of them
    prob = torch.exp(-ce)
    close(get("ohem", thresh=0.7, min_kept=0)(logits, target), ce[prob <= 0.7].mean())
    q = torch.sort(prob).values[89]
    close(get("ohem", thresh=0.1, min_kept=90)(logits, target), ce[prob <= max(0.1, float(q))].mean())
    # fewer valid voxels than min_kept: everything is kept, i.e. plain CE
    close(get("ohem", thresh=0.7, min_kept=1000)(logits, target), ce.mean())


# ---------------------------------------------------------------- loss-specific edge cases
def test_recall_single_class_batch_and_ema():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    loss = get("recall")
    v = loss(logits, target)
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(logits.grad).all()
    pred0 = (logits.argmax(1) == 0).float().mean()
    ce = F.cross_entropy(logits, target[:, 0])
    close(v, (1 - pred0) * ce, 1e-4)  # w_0 = FN/(TP+FN) = 1 − recall of background
    # EMA: counts averaged across calls
    ema = get("recall", ema=0.5, eps=0.0)
    good = torch.zeros(1, 2, 1, 2)
    good[:, 0] = 5.0  # predicts background everywhere
    t1 = torch.tensor([[[[0, 1]]]])
    ema(good, t1)  # TP=(1,0) FN=(0,1)
    t2 = torch.tensor([[[[0, 0]]]])
    v2 = ema(good, t2)  # batch TP=(2,0) FN=(0,0); EMA TP=(1.5,0) FN=(0,.5) -> w0 = 0
    close(v2, 0.0)
    assert ema.fn_ema.tolist() == [0.0, 0.5]


def test_recall_ignore_index_excluded_from_counts():
    logits = torch.zeros(1, 2, 1, 4)
    logits[:, 1] = 1.0  # predicts class 1 everywhere
    target = torch.tensor([[[[0, 1, 2, 2]]]])
    # valid voxels 0 (label 0, wrong: w0 = 1) and 1 (label 1, right: w1 = 0)
    expected = math.log(1 + math.e) / 2
    close(get("recall", ignore_index=2, eps=0.0)(logits, target), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dfl_saturated_logits_finite(dtype):
    logits = torch.tensor([[[[300.0, -300.0, 0.0]], [[-300.0, 300.0, 0.0]], [[0.0, 0.0, 300.0]]]])
    logits = logits.to(dtype).requires_grad_(True)
    target = torch.tensor([[[[0, 0, 2]]]])
    for gamma in (1.0, 0.5, 2.0):
        v = get("dfl", gamma=gamma)(logits, target)
        v.backward()
        assert torch.isfinite(v), gamma
        assert torch.isfinite(logits.grad.float()).all(), gamma
        logits.grad = None
    # voxel 2 is wrong: −log z_0 ≈ 600, −log(1 − z_1) ≈ 300 (class 2 keeps logit 0), |y − z| sums to 2
    v = get("dfl")(logits.detach().float(), target)
    close(v, (600 + 300 + 2) / 3, 1e-3)


def test_log_one_minus_softmax_exact():
    u = torch.randn(4, 5, 3, 3) * 30
    ref = torch.log1p(-torch.softmax(u.double(), 1))
    lse = torch.logsumexp(u.double(), 1, keepdim=True)
    exact = torch.stack(
        [torch.logsumexp(torch.cat([u[:, :i], u[:, i + 1 :]], 1).double(), 1) for i in range(5)], 1
    )
    exact = exact - lse
    got = log_one_minus_softmax(u).double()
    assert torch.isfinite(got).all()
    assert torch.allclose(got, exact, rtol=1e-5, atol=1e-5)
    finite = torch.isfinite(ref) & (torch.softmax(u.double(), 1) < 0.5)  # where log1p(-z) is accurate
    assert torch.allclose(got[finite], ref[finite], rtol=1e-4, atol=1e-5)


def test_kl_with_absent_classes_finite():
    logits = torch.randn(2, 4, 6, 6, requires_grad=True)
    target = torch.randint(0, 2, (2, 1, 6, 6))  # classes 2, 3 absent
    for name in ("marginal_kl", "ce_kl", "ce_dicebias", "marginal_l1"):
        v = get(name)(logits, target)
        v.backward()
        assert torch.isfinite(v) and torch.isfinite(logits.grad).all(), name
        logits.grad = None
    # a class in the target that is predicted nowhere: large but finite KL
    sat = torch.full((1, 2, 4, 4), 0.0)
    sat[:, 0] = 100.0
    t = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    t[..., 0, 0] = 1
    assert torch.isfinite(get("marginal_kl")(sat, t))


def test_marginal_ignore_voxels_excluded():
    logits = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 1, 4, 4))
    target_ign = target.clone()
    target_ign[..., 2:, :] = 9
    a = get("marginal_l1", ignore_index=9)(logits, target_ign)
    b = get("marginal_l1")(logits[..., :2, :], target[..., :2, :])
    close(a, b)


def test_dice_bias_proposition_1():
    """Liu et al. 2021, Prop. 1: Σ_k log(p̂_k + ŷ_k) over the simplex is minimal at the vertex of the largest
    ŷ_k."""
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        y_hat = torch.distributions.Dirichlet(torch.ones(3)).sample()
        pts = torch.distributions.Dirichlet(torch.ones(3) * 0.5).sample((4000,))
        steps = torch.linspace(0, 1, 41)
        grid = torch.stack(torch.meshgrid(steps, steps, indexing="ij"), -1).reshape(-1, 2)
        grid = grid[grid.sum(1) <= 1]
        grid = torch.cat([grid, 1 - grid.sum(1, keepdim=True)], 1)
        p = torch.cat([pts, grid.clamp_min(0)])
        vertex = F.one_hot(y_hat.argmax(), 3).float()
        db = dice_bias(y_hat.expand(len(p), 3), p)
        db_t = dice_bias(y_hat[None], vertex[None])
        assert bool((db >= db_t - 1e-6).all())
        assert float(db.min()) == pytest.approx(float(db_t), abs=1e-6)  # the vertex is in the grid
    del g


def test_distributed_helpers_noop():
    assert not is_distributed()
    t = torch.tensor([1.0, 2.0], requires_grad=True)
    out = all_reduce_sum(t)
    assert out.tolist() == [1.0, 2.0] and not out.requires_grad
    out += 1
    assert t.tolist() == [1.0, 2.0]


def test_bad_arguments_raise():
    for name, kw in [
        ("topk", {"k": 0}),
        ("ohem", {"keep_ratio": 1.5}),
        ("dfl", {"rho": 0.5}),
        ("cb_ce", {"beta": 1.0}),
        ("recall", {"ema": 1.0}),
        ("wce", {"weight": "bogus"}),
    ]:
        with pytest.raises(ValueError):
            get(name, **kw)
    with pytest.raises(ValueError, match="weight"):
        get("wce", weight=[1.0, 2.0])(torch.randn(1, 3, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="alpha"):
        get("focal", alpha=[1.0, 2.0])(torch.randn(1, 3, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long))


def test_marginal_losses_binary_match_the_sigmoid_forms():
    """C == 1: L1 and KL as in SegLossBias' binary mode, DiceBias on the foreground only (Liu et al. 2021,
    Eq. 21)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 1, 7, 5, generator=g, dtype=torch.float64)
    t = (torch.rand(3, 1, 7, 5, generator=g) < 0.3).long()
    t[0, 0, 0, 0] = 1
    tau = 10.0
    bce = F.binary_cross_entropy_with_logits(x, t.double())
    p1 = torch.sigmoid(tau * x).mean((1, 2, 3))
    y1 = t.double().mean((1, 2, 3))
    kl = y1 * torch.log(y1 / p1) + (1 - y1) * torch.log((1 - y1) / (1 - p1))
    close(get("ce_l1")(x.float(), t), bce + (p1 - y1).abs().mean())
    close(get("ce_kl")(x.float(), t), bce + 0.1 * kl.mean())
    close(get("ce_dicebias")(x.float(), t), bce + 0.01 * torch.log(p1 + y1).mean())
