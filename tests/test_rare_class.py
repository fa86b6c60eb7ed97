"""The rare-class forms (``dfl_dc``, ``dice_ce_hd_dt``, ComboFG) and the gradient balance they rest on.

The balance figures of docs/rare-class.md are checked here against autograd of the papers' equations: DFL's
push on a confidently classified voxel of another class tends to ``κ = 1 + β/ρ + 2α`` times CE's, its pull on
a missed voxel to CE's, and :func:`gradient_balance` reports exactly those per-voxel gradients.
"""

from __future__ import annotations

import pytest
import torch

from segbalance.monai_losses import get
from segbalance.monai_losses.rare_class import DualFocalDiceLoss, dfl_negative_push


def _logits(probs: list[float]) -> torch.Tensor:
    return torch.log(torch.tensor(probs, dtype=torch.float64)).reshape(1, len(probs), 1, 1)


def _grad(loss_fn, logits: torch.Tensor, label: int) -> torch.Tensor:
    x = logits.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(x, torch.tensor([[[[label]]]])), x)
    return g.flatten()


def _ce(x, y):
    return torch.nn.functional.cross_entropy(x, y[:, 0].long())


def _dfl_equation(alpha, beta, rho):
    """Eq. 8 with the sign of Eq. 7 (γ = 1), summed over classes, in float64 autograd."""

    def loss(x, y):
        z = torch.softmax(x, 1)
        onehot = torch.nn.functional.one_hot(y[:, 0].long(), x.shape[1]).movedim(-1, 1).to(z.dtype)
        negatives = beta * (1 - onehot) * torch.log(rho - z)
        per_voxel = -(onehot * torch.log(z)) - negatives + alpha * (onehot - z).abs()
        return per_voxel.sum(1).mean()

    return loss


@pytest.mark.parametrize(
    "alpha, beta, rho", [(1.0, 1.0, 1.0), (0.5, 2.0, 1.0), (2.0, 1.0, 1.5), (0.0, 0.0, 1.0)]
)
def test_dfl_push_on_a_confident_other_class_voxel_is_kappa_times_ce(alpha, beta, rho):
    eps = 1e-7
    logits = _logits([1 - 2 * eps, eps, eps])  # background predicted with z → 1
    g_dfl = _grad(_dfl_equation(alpha, beta, rho), logits, 0)
    g_ce = _grad(_ce, logits, 0)
    assert float(g_dfl[2] / g_ce[2]) == pytest.approx(dfl_negative_push(alpha, beta, rho), rel=1e-5)
    # and the registered loss has the same gradient as the equation
    if (alpha, beta, rho) == (1.0, 1.0, 1.0):
        g_reg = _grad(lambda x, y: get("dfl")(x.float(), y), logits, 0).double()
        assert float(g_reg[2] / g_ce[2]) == pytest.approx(4.0, rel=1e-3)


def test_dfl_pull_on_a_missed_voxel_tends_to_ce_and_misdirects_part_to_background():
    # lesion voxel predicted as background: pull on the lesion logit = CE's + 100·z_l (z_bg = 0.99)
    logits = _logits([0.99, 0.005, 0.005])
    g_dfl, g_ce = _grad(_dfl_equation(1, 1, 1), logits, 2), _grad(_ce, logits, 2)
    # ∂L/∂u_l = z_l(∂L/∂z_l − Σ_k z_k ∂L/∂z_k), ∂L/∂z_l = −1/z_l − α, ∂L/∂z_j = β/(ρ − z_j) + α (j ≠ l)
    s = 0.005 * (-1 / 0.005 - 1) + 0.99 * (1 / 0.01 + 1) + 0.005 * (1 / 0.995 + 1)
    assert float(g_dfl[2]) == pytest.approx(0.005 * (-1 / 0.005 - 1 - s), rel=1e-9)
    assert float(g_dfl[2] / g_ce[2]) == pytest.approx(1.5075, abs=1e-3)
    # predicted as organ instead: DFL also raises the background logit, a third as much as the lesion's
    logits = _logits([0.005, 0.99, 0.005])
    g_dfl, g_ce = _grad(_dfl_equation(1, 1, 1), logits, 2), _grad(_ce, logits, 2)
    assert float(g_dfl[0]) < 0 and float(g_dfl[0] / g_dfl[2]) == pytest.approx(0.3233, abs=1e-3)
    assert float(g_ce[0]) > 0  # CE lowers it


def test_dfl_dc_is_dfl_plus_foreground_dice():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 6, 6, generator=g)
    target = torch.randint(0, 3, (2, 1, 4, 6, 6), generator=g)
    for batch in (False, True):
        loss = DualFocalDiceLoss(alpha=0.5, beta=2.0, rho=2.0, batch=batch)
        expected = get("dfl", alpha=0.5, beta=2.0, rho=2.0)(logits, target) + get(
            "dice", include_background=False, batch=batch
        )(logits, target)
        torch.testing.assert_close(loss(logits, target), expected)
    weighted = DualFocalDiceLoss(dfl_weight=0.5, dice_weight=2.0)(logits, target)
    torch.testing.assert_close(
        weighted, 0.5 * get("dfl")(logits, target) + 2 * get("dice", include_background=False)(logits, target)
    )


@pytest.mark.parametrize("rho", [1.0, 2.0])
def test_missed_voxel_gradient_formula_equals_autograd_and_rho_2_stops_raising_background(rho):
    from segbalance.monai_losses.rare_class import dfl_missed_voxel_gradient

    probs = [0.0099, 0.99, 0.0001]  # a lesion voxel (class 2) predicted as organ
    g = _grad(_dfl_equation(1.0, 1.0, rho), _logits(probs), 2)
    assert dfl_missed_voxel_gradient(probs, 2, rho=rho) == pytest.approx(g.tolist(), rel=1e-9)
    g_ce = _grad(_ce, _logits(probs), 2)
    assert float(g_ce[0]) > 0  # CE lowers the background logit
    if rho == 1.0:
        assert float(g[0]) < 0 and float(g[0] / g[2]) > 0.9  # raised almost as much as the lesion's
    else:
        assert float(g[0]) > 0 and float(g[2]) == pytest.approx(float(g_ce[2]), rel=1e-3)


@pytest.mark.parametrize("bad", [{"alpha": -1}, {"rho": 0.5}, {"dfl_weight": -0.1}, {"dice_weight": "a"}])
def test_dfl_dc_bad_arguments_name_the_argument(bad):
    with pytest.raises(ValueError, match=f"DualFocalDiceLoss: {next(iter(bad))}"):
        DualFocalDiceLoss(**bad)


def test_dice_ce_hd_dt_is_the_scheduled_pairing_of_foreground_dice_ce_and_hd_dt():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 6, 8, 8, generator=g)
    target = torch.randint(0, 3, (2, 1, 6, 8, 8), generator=g)
    spacing = (2.5, 0.8, 0.8)
    loss = get("dice_ce_hd_dt", spacing=spacing)
    region = get("dice_ce", include_background=False)(logits, target)
    hd = get("hd_dt", spacing=spacing)(logits, target)
    for _ in range(3):
        a = loss.alpha
        torch.testing.assert_close(loss(logits, target), (1 - a) * region + a * hd)
        loss.scheduler.step()
    assert loss.alpha == pytest.approx(0.04)
    # HD-DT's exponent reaches the distance term
    cubic = get("dice_ce_hd_dt", spacing=spacing, distance_kwargs={"alpha": 3.0})
    assert cubic.boundary_loss.alpha == 3.0


def _combo_equation(beta):
    """The BCE part of Combo (Ma 2020, Eq. 15) over every class on softmax probabilities, float64."""

    def loss(x, y):
        z = torch.softmax(x, 1)
        g = torch.nn.functional.one_hot(y[:, 0].long(), x.shape[1]).movedim(-1, 1).to(z.dtype)
        return -(beta * g * torch.log(z) + (1 - beta) * (1 - g) * torch.log(1 - z)).mean(1).mean()

    return loss


def test_combo_beta_09_row_and_its_share_of_the_correction_sent_to_background():
    from segbalance.trainers.table import trainer_specs

    spec = trainer_specs()["nnUNetTrainerComboBeta09"]
    assert (spec.loss, spec.kwargs) == ("combo", {"beta": 0.9})
    probs = [0.0099, 0.99, 0.0001]  # a lesion voxel predicted as organ
    shares = {}
    for beta in (0.5, 0.9):
        g = _grad(_combo_equation(beta), _logits(probs), 2)
        assert float(g[2]) < 0  # the lesion logit is raised
        shares[beta] = float(g[0] / g[2])  # > 0: the background logit is raised too
        # the registered loss's cross-entropy part has the same gradient (α = 1: no Dice term)
        combo = get("combo", alpha=1.0, beta=beta)
        g_reg = _grad(lambda x, y, loss=combo: loss(x.float(), y), _logits(probs), 2)
        assert g_reg.tolist() == pytest.approx(g.tolist(), rel=1e-4, abs=1e-6)
    assert shares[0.5] == pytest.approx(0.97, abs=0.02)  # about as much as the lesion
    assert shares[0.9] == pytest.approx(0.097, abs=0.01)  # ≈ (1 − β)/β


def test_gradient_balance_reports_per_voxel_gradients():
    pytest.importorskip("nnunetv2")
    from segbalance.trainers.diagnostics import gradient_balance

    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 4, 5, 5, generator=g)
    target = torch.randint(0, 3, (2, 1, 4, 5, 5), generator=g)
    target[0, 0, 0, 0, :3] = 3  # ignored voxels
    stats = gradient_balance(get("ce", ignore_index=3), logits, target, ignore_label=3)
    z = torch.softmax(logits, 1)
    y = target[:, 0]
    for c in (1, 2):
        pos, neg = y == c, (y != c) & (y != 3)
        # CE per voxel: ∂/∂u_c = z_c − [y = c]
        assert stats["pull_ce"][c - 1] == pytest.approx(float((1 - z[:, c][pos]).mean()), rel=1e-5)
        assert stats["push_ce"][c - 1] == pytest.approx(float(z[:, c][neg].mean()), rel=1e-5)
        assert stats["pull"][c - 1] == pytest.approx(stats["pull_ce"][c - 1], rel=1e-5)
        assert stats["z_pos"][c - 1] == pytest.approx(float(z[:, c][pos].mean()), rel=1e-5)
        assert stats["n_pos"][c - 1] == int(pos.sum())
        # CE raises nothing but the voxel's own class
        others = stats["others_pos"][c - 1]
        assert others[c] > 0 and all(v < 0 for j, v in enumerate(others) if j != c)
    # DFL at a saturated background: its push is ≈ κ = 4 times CE's
    sat = torch.full((1, 3, 2, 2, 2), -6.0)
    sat[:, 0] = 6.0
    lab = torch.zeros(1, 1, 2, 2, 2, dtype=torch.long)
    lab[0, 0, 0, 0, 0] = 2
    stats = gradient_balance(get("dfl"), sat, lab)
    assert stats["push"][1] / stats["push_ce"][1] == pytest.approx(4.0, rel=1e-2)
