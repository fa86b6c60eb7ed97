"""Autograd against the papers' derivative formulas (Hossain et al. 2021, Eq. 9–12 and Appendix B; Tian et
al. 2022, Eq. 7–8)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segbalance.monai_losses import get


def _inputs(c=4, shape=(3, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, c, *shape, generator=g, dtype=torch.float64) * 1.5
    target = torch.randint(0, c, (2, 1, *shape), generator=g)
    return logits, target


def _autograd(name, logits, target, **kw):
    u = logits.clone().requires_grad_(True)
    get(name, **kw)(u, target).backward()
    return u.grad


def _chain_through_softmax(dl_dz, z):
    """``dL/du_j = z_j (dL/dz_j − Σ_i dL/dz_i z_i)`` (softmax Jacobian)."""
    return z * (dl_dz - (dl_dz * z).sum(1, keepdim=True))


def _zy(logits, target):
    z = torch.softmax(logits, 1)
    y = torch.nn.functional.one_hot(target[:, 0], logits.shape[1]).movedim(-1, 1).double()
    n = target[:, 0].numel()
    return z, y, n


@pytest.mark.parametrize(
    "alpha,beta,gamma,rho", [(1, 1, 1, 1), (0.5, 2.0, 2.0, 1.0), (2.0, 1.0, 0.5, 1.5), (1.0, 0.0, 3.0, 1.0)]
)
def test_dfl_autograd_matches_eq12(alpha, beta, gamma, rho):
    """Hossain et al. 2021, Eq. 12 generalised: dL/dz = −y/z + β(1−y)/(ρ−z) + αγ|y−z|^(γ−1)·sign(z−y).

    Eq. 12 as printed has sign(y−z) in the last term (from the typo in Eq. 8); DESIGN §3 takes Eq. 7's sign.
    """
    logits, target = _inputs()
    z, y, n = _zy(logits, target)
    dl_dz = (
        -y / z + beta * (1 - y) / (rho - z) + alpha * gamma * (y - z).abs() ** (gamma - 1) * torch.sign(z - y)
    )
    expected = _chain_through_softmax(dl_dz, z) / n
    got = _autograd("dfl", logits, target, alpha=alpha, beta=beta, gamma=gamma, rho=rho)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_dfl_alpha_term_matches_appendix_b7_b8():
    """Hossain et al. 2021, Appendix B: for −log z_j + Σ_i |y_i − z_i| (β = 0, α = γ = 1)

    B.7 (positive class): dL/du_j = z_j − 1 + 2 z_j (z_j − 1); B.8 (negative): dL/du_i = z_i + 2 z_i z_j.
    """
    logits, target = _inputs(c=3)
    z, y, n = _zy(logits, target)
    z_true = (z * y).sum(1, keepdim=True)
    expected = torch.where(y.bool(), z - 1 + 2 * z * (z - 1), z + 2 * z * z_true) / n
    got = _autograd("dfl", logits, target, beta=0.0)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-7)
    # the printed sign of Eq. 8 (−α|y−z|) would give z − 1 − 2 z_j(z_j − 1) instead: clearly different
    wrong = torch.where(y.bool(), z - 1 - 2 * z * (z - 1), z - 2 * z * z_true) / n
    assert not torch.allclose(got, wrong, rtol=1e-2, atol=1e-4)


def test_dce_and_focal_autograd_match_eq10_eq11():
    logits, target = _inputs(c=3, seed=1)
    z, y, n = _zy(logits, target)
    dce = -y / z + (1 - y) / (1 + z)  # Eq. 10
    assert torch.allclose(
        _autograd("dce", logits, target), _chain_through_softmax(dce, z) / n, rtol=1e-4, atol=1e-7
    )
    fl = -y / z * (1 - z) + y * torch.log(z)  # Eq. 11 (γ = 1)
    got = _autograd("focal", logits, target, gamma=1.0)
    assert torch.allclose(got, _chain_through_softmax(fl, z) / n, rtol=1e-4, atol=1e-7)
    ce = -y / z  # Eq. 9
    assert torch.allclose(
        _autograd("ce", logits, target), _chain_through_softmax(ce, z) / n, rtol=1e-4, atol=1e-7
    )


def test_recall_binary_gradient_matches_eq7_eq8():
    """Tian et al. 2022, Eq. 7–8: Σ_n ∂L/∂z_1 = FN_1 (P̄_1^(1) − 1) + FN_2 P̄_1^(2) = FN_1 (P̄_1^(1) − 1) +
    FP_1 P̄_1^(2).

    Weights are the detached 1 − recall of the current batch; ``reduction="sum"`` as in the paper's sums.
    """
    logits, target = _inputs(c=2, shape=(6, 7), seed=3)
    z, y, _ = _zy(logits, target)
    pred = logits.argmax(1)
    lab = target[:, 0]
    fn1 = int(((lab == 0) & (pred != 0)).sum())
    fn2 = int(((lab == 1) & (pred != 1)).sum())
    fp1 = int(((pred == 0) & (lab != 0)).sum())
    assert fn2 == fp1 and fn1 > 0 and fn2 > 0
    p1 = z[:, 0]
    p1_given_1 = p1[lab == 0].mean()
    p1_given_2 = p1[lab == 1].mean()
    grad = _autograd("recall", logits, target, eps=0.0, reduction="sum")
    assert float(grad[:, 0].sum()) == pytest.approx(
        float(fn1 * (p1_given_1 - 1) + fn2 * p1_given_2), rel=1e-5
    )
    # per voxel: w_y (p_1 − 1[y = 1]) with w = FN / (TP + FN)
    w = torch.tensor([fn1 / int((lab == 0).sum()), fn2 / int((lab == 1).sum())], dtype=torch.float64)
    per_voxel = w[lab] * (p1 - (lab == 0).double())
    assert torch.allclose(grad[:, 0], per_voxel, rtol=1e-4, atol=1e-7)


def test_recall_sigmoid_binary_gradient():
    """C == 1 with sigmoid: dL/du = w_y (σ(u) − y) / N, weights from the thresholded prediction u > 0."""
    g = torch.Generator().manual_seed(5)
    u = torch.randn(2, 1, 5, 6, generator=g, dtype=torch.float64)
    t = (torch.rand(2, 1, 5, 6, generator=g) > 0.6).long()
    pred = (u > 0).long()
    w = torch.zeros(2, dtype=torch.float64)
    for c in (0, 1):
        gt = t == c
        w[c] = float((gt & (pred != c)).sum()) / max(int(gt.sum()), 1)
    expected = w[t] * (torch.sigmoid(u) - t.double()) / t.numel()
    assert torch.allclose(_autograd("recall", u, t, eps=0.0), expected, rtol=1e-4, atol=1e-7)


def test_dfl_gamma_below_one_zero_error_no_nan():
    """|y − z| = 0 exactly (saturated logits) with γ < 1 must not give NaN gradients."""
    logits = torch.tensor([[[[200.0]], [[-200.0]]]], requires_grad=True)
    target = torch.zeros(1, 1, 1, 1, dtype=torch.long)
    get("dfl", gamma=0.5)(logits, target).backward()
    assert torch.isfinite(logits.grad).all()


def _dfl_reference(u, y, a, b, g, r):
    """The DFL equation in float64 with plain autograd (log(1 − z) by log-sum-exp for ρ = 1)."""
    lz = torch.log_softmax(u, 1)
    if r == 1.0:
        k = u.shape[1]
        rest = [torch.logsumexp(torch.cat([u[:, :i], u[:, i + 1 :]], 1), 1) for i in range(k)]
        log_neg = torch.stack(rest, 1) - torch.logsumexp(u, 1, keepdim=True)
    else:
        log_neg = torch.log(r - lz.exp())
    return (-y * lz - b * (1 - y) * log_neg + a * (y - lz.exp()).abs() ** g).sum(1).mean()


@pytest.mark.parametrize(
    "params", [(1, 1, 1, 1), (0.5, 2, 2, 1), (1, 1, 1, 1.5), (2, 0.5, 0.5, 1), (1, 3, 3, 1.2)]
)
@pytest.mark.parametrize("scale", [1.0, 6.0, 40.0])
def test_dfl_closed_form_gradient_equals_autograd_of_the_equation(params, scale):
    """The fused DFL backward (Hossain et al. 2021, Eq. 9–12 generalised to α, β, γ, ρ) against float64
    autograd."""
    a, b, g, r = params
    if g < 1 and scale > 10:
        pytest.skip("z rounds to y in float64 too: the reference's |y − z|^(γ−1) is inf there")
    gen = torch.Generator().manual_seed(int(scale * 10 + a * 100 + g))
    u = torch.randn(2, 4, 5, 6, 3, generator=gen) * scale
    t = torch.randint(0, 4, (2, 1, 5, 6, 3), generator=gen)
    y = F.one_hot(t[:, 0], 4).movedim(-1, 1).double()
    x = u.clone().requires_grad_(True)
    value = get("dfl", alpha=a, beta=b, gamma=g, rho=r)(x, t)
    value.backward()
    x64 = u.double().requires_grad_(True)
    expected = _dfl_reference(x64, y, a, b, g, r)
    expected.backward()
    assert float(value) == pytest.approx(float(expected), rel=1e-5, abs=1e-5)
    # γ < 1: |y − z|^(γ−1) amplifies float32 rounding of 1 − z where z → 1 (autograd in float32 alike)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-7 if g >= 1 else 1e-5)


def test_dfl_gradient_finite_and_exact_for_saturated_logits():
    """Logit gaps of 60–120: z rounds to 1 in float32; value and gradient still match float64."""
    u = torch.zeros(1, 3, 1, 4)
    u[0, 0] = 60.0
    u[0, 1, 0, 1] = 120.0
    t = torch.tensor([[[[1, 0, 2, 0]]]])
    x = u.clone().requires_grad_(True)
    value = get("dfl")(x, t)
    value.backward()
    x64 = u.double().requires_grad_(True)
    expected = _dfl_reference(x64, F.one_hot(t[:, 0], 3).movedim(-1, 1).double(), 1, 1, 1, 1.0)
    expected.backward()
    assert torch.isfinite(x.grad).all()
    assert float(value) == pytest.approx(float(expected), rel=1e-6)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("alpha", [None, [0.25, 1.0, 2.0, 0.5]])
@pytest.mark.parametrize("scale", [1.0, 60.0])
def test_focal_closed_form_gradient_equals_autograd_of_the_equation(gamma, alpha, scale):
    """Fused focal backward ``h_j − z_j Σ h`` vs float64 autograd of Hossain et al. 2021, Eq. 5, saturated
    included."""
    gen = torch.Generator().manual_seed(int(gamma * 10 + scale))
    u = torch.randn(2, 4, 5, 6, 3, generator=gen) * scale
    t = torch.randint(0, 4, (2, 1, 5, 6, 3), generator=gen)
    x = u.clone().requires_grad_(True)
    value = get("focal", gamma=gamma, alpha=alpha)(x, t)
    value.backward()
    x64 = u.double().requires_grad_(True)
    lz = torch.log_softmax(x64, 1)
    a = F.one_hot(t[:, 0], 4).movedim(-1, 1).double()
    if alpha is not None:
        a = a * torch.tensor(alpha, dtype=torch.float64).view(1, -1, 1, 1, 1)
    expected = -(a * (-torch.expm1(lz)).clamp_min(1e-300) ** gamma * lz).sum(1).mean()
    expected.backward()
    assert float(value) == pytest.approx(float(expected), rel=1e-5, abs=1e-5)
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (0.5, 2.0), (0.05, 0.3)])
@pytest.mark.parametrize("scale", [1.0, 60.0])
def test_dce_closed_form_gradient_equals_autograd_of_the_equation(alpha, beta, scale):
    """Fused Dual CE backward vs float64 autograd of Hossain et al. 2021, Eq. 4 (as printed), soft targets
    included."""
    gen = torch.Generator().manual_seed(int(alpha * 100 + scale))
    u = torch.randn(2, 3, 6, 5, generator=gen) * scale
    y = torch.softmax(torch.randn(2, 3, 6, 5, generator=gen) * 3, 1)  # soft target rows summing to 1
    x = u.clone().requires_grad_(True)
    value = get("dce", alpha=alpha, beta=beta)(x, y)
    value.backward()
    x64 = u.double().requires_grad_(True)
    y64 = y.double()
    lz = torch.log_softmax(x64, 1)
    expected = (-y64 * lz + beta * (1 - y64) * torch.log(alpha + lz.exp())).sum(1).mean()
    expected.backward()
    assert float(value) == pytest.approx(float(expected), rel=1e-5, abs=1e-5)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-8)
