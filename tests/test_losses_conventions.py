"""MONAI conventions of every loss (issue 13.1, 13.4, 10.8): ``reduction="none"`` shapes, what
``include_background=False`` does, warnings for flags a loss cannot honour, empty batches, second
derivatives of the hand-written backward passes, and the conventions table of docs/losses.md."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

from segbalance.loss_table import EXAMPLE_KWARGS, synthetic_batch
from segbalance.monai_losses import get, loss_class, names
from segbalance.monai_losses.conventions import conventions_table
from segbalance.monai_losses.focal import dual_cross_entropy_terms, dual_focal_terms, focal_terms

monai_losses = pytest.importorskip("monai.losses")

ALL = names()
DOCS = Path(__file__).resolve().parents[1] / "docs" / "losses.md"


def make(name: str, **kwargs):
    return get(name, **{**EXAMPLE_KWARGS.get(name, {}), **kwargs})


def onehot(labels: torch.Tensor, c: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels[:, 0], c).movedim(-1, 1).float()


# ---------------------------------------------------------------- empty batch (10.8)
@pytest.mark.parametrize("name", ALL)
def test_empty_batch_is_refused_naming_the_argument(name):
    logits = torch.zeros(0, 3, 6, 6, 6)
    labels = torch.zeros(0, 1, 6, 6, 6, dtype=torch.long)
    with pytest.raises(ValueError, match=r"logits has an empty batch \(B = 0"):
        make(name)(logits, labels)
    with pytest.raises(ValueError, match="logits"):
        make(name)(torch.zeros(2, 3, 0, 6, 6), torch.zeros(2, 1, 0, 6, 6, dtype=torch.long))


# ---------------------------------------------------------------- reduction="none" shapes
def _expected_none_shape(loss, b: int, c_scored: int, spatial: tuple, batch: bool):
    ones = (1,) * len(spatial)
    style = loss.none_style
    if style == "voxel":
        return (b, c_scored) + spatial
    if style == "tversky":
        return (c_scored,) if batch else (b, c_scored)
    if style == "image":
        return (b, 1) + ones
    if style == "gdl":
        return (1,) + ones if batch else (b, 1) + ones
    if style == "dice":
        return (c_scored,) + ones if batch else (b, c_scored) + ones
    if style == "region":
        return (1, c_scored) + ones if batch else (b, c_scored) + ones
    return None  # "selected": 1-D, any length


WITH_BATCH = [n for n in ALL if hasattr(make(n), "batch") and loss_class(n).none_style != "image"]


@pytest.mark.parametrize(
    "name, batch", [(n, False) for n in ALL] + [(n, True) for n in WITH_BATCH], ids=lambda v: str(v)
)
@pytest.mark.parametrize("dims", [2, 3])
def test_none_shape_follows_the_declared_style(name, dims, batch):
    kwargs = {"reduction": "none", **({"batch": True} if batch else {})}
    loss = make(name, **kwargs)
    logits, labels = synthetic_batch(batch=2, num_classes=3, size=8, dims=dims)
    value = loss(logits, labels)
    c_scored = 3 if loss.include_background or name == "marginal_l1" else 2
    expected = _expected_none_shape(loss, 2, c_scored, tuple(logits.shape[2:]), batch)
    if expected is None:
        assert value.ndim == 1
    else:
        assert tuple(value.shape) == expected
        if loss.none_style != "tversky" and value.shape[-dims - 1] in (1, 3):
            # as MONAI's: "none" broadcasts against the input
            torch.broadcast_shapes(value.shape, logits.shape)


MONAI_PAIRS = [
    ("dice", "DiceLoss", {}, {}),
    ("iou", "DiceLoss", {}, {"jaccard": True}),
    ("gdl", "GeneralizedDiceLoss", {}, {}),
    ("tversky", "TverskyLoss", {}, {"alpha": 0.3, "beta": 0.7}),
    ("hd_dt", "HausdorffDTLoss", {}, {}),
]


@pytest.mark.parametrize("ours, theirs, kw, their_kw", MONAI_PAIRS, ids=[p[0] for p in MONAI_PAIRS])
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("include_background", [True, False])
def test_none_equals_monai_shape_and_values(ours, theirs, kw, their_kw, batch, include_background):
    logits, labels = synthetic_batch(batch=2, num_classes=3, size=10, dims=3)
    flags = dict(include_background=include_background, batch=batch, reduction="none")
    mine = get(ours, **kw, **flags)(logits, labels)
    ref = getattr(monai_losses, theirs)(softmax=True, to_onehot_y=True, **their_kw, **flags)(logits, labels)
    assert mine.shape == ref.shape
    torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-5)


def test_focal_none_equals_monai_focal_terms():
    logits, labels = synthetic_batch(batch=2, num_classes=3, size=8, dims=3)
    mine = get("focal", reduction="none")(logits, labels)
    ref = monai_losses.FocalLoss(use_softmax=True, to_onehot_y=True, reduction="none")(logits, labels)
    assert mine.shape == ref.shape == logits.shape
    torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- include_background=False
def test_include_background_false_drops_class_zero_from_the_voxel_sum():
    logits, labels = synthetic_batch(batch=2, num_classes=3, size=8, dims=3)
    y, lz = onehot(labels, 3), torch.log_softmax(logits, 1)
    expected = -(y[:, 1:] * lz[:, 1:]).sum(1).mean()  # softmax over all three channels
    torch.testing.assert_close(get("ce", include_background=False)(logits, labels), expected)
    none = get("ce", include_background=False, reduction="none")(logits, labels)
    torch.testing.assert_close(none, -(y[:, 1:] * lz[:, 1:]))


def test_focal_without_background_equals_monai_where_comparable():
    """MONAI drops channel 0 before its softmax, we after (softmax over all channels, DESIGN/docs): the
    two agree when the background logit is so low that it carries no probability."""
    logits, labels = synthetic_batch(batch=2, num_classes=3, size=8, dims=3)
    flags = dict(include_background=False, reduction="none")
    ref_fn = monai_losses.FocalLoss(use_softmax=True, to_onehot_y=True, **flags)
    low_bg = logits.clone()
    low_bg[:, 0] = -60.0
    torch.testing.assert_close(get("focal", **flags)(low_bg, labels), ref_fn(low_bg, labels))
    assert not torch.allclose(get("focal", **flags)(logits, labels), ref_fn(logits, labels))
    mean = get("focal", include_background=False)(low_bg, labels)
    ref_mean = monai_losses.FocalLoss(use_softmax=True, to_onehot_y=True, include_background=False)
    torch.testing.assert_close(mean, 2 * ref_mean(low_bg, labels))  # ours sums the C' = 2 classes


@pytest.mark.parametrize("lambda_dice, lambda_ce", [(1.0, 1.0), (0.3, 1.7)])
def test_dice_ce_without_background_equals_monai(lambda_dice, lambda_ce):
    logits, labels = synthetic_batch(batch=2, num_classes=3, size=10, dims=3)
    flags = dict(include_background=False, lambda_dice=lambda_dice, lambda_ce=lambda_ce)
    ref = monai_losses.DiceCELoss(softmax=True, to_onehot_y=True, **flags)(logits, labels)
    torch.testing.assert_close(get("dice_ce", **flags)(logits, labels), ref, rtol=1e-5, atol=1e-6)


VOXEL = [n for n in ALL if loss_class(n).background_scope == "class_sum"]


@pytest.mark.parametrize("name", VOXEL)
def test_per_voxel_losses_honour_include_background(name):
    logits, labels = synthetic_batch(batch=2, num_classes=3, size=8, dims=3)
    with_bg = make(name)(logits, labels)
    x = logits.clone().requires_grad_(True)
    without = make(name, include_background=False)(x, labels)
    without.backward()
    assert torch.isfinite(without) and torch.isfinite(x.grad).all()
    assert not torch.allclose(with_bg, without.detach())
    if loss_class(name).none_style == "voxel":
        terms = make(name, reduction="none")(logits, labels)
        torch.testing.assert_close(make(name, include_background=False, reduction="none")(logits, labels),
                                   terms[:, 1:], rtol=1e-5, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    "name, terms_fn, params",
    [
        ("dfl", dual_focal_terms, dict(alpha=1.0, beta=1.0, gamma=1.0, rho=1.0)),
        ("dfl", dual_focal_terms, dict(alpha=0.5, beta=2.0, gamma=2.0, rho=1.5)),
        ("dce", dual_cross_entropy_terms, dict(alpha=1.0, beta=1.0)),
        ("focal", None, dict(gamma=2.0)),
    ],
)
def test_closed_form_gradients_without_background_equal_float64_autograd(name, terms_fn, params):
    logits, labels = synthetic_batch(batch=2, num_classes=4, size=6, dims=3)
    u = logits.double().requires_grad_(True)
    y = onehot(labels, 4).double()
    if terms_fn is None:
        terms = focal_terms(u, y, params["gamma"])
    else:
        terms = terms_fn(u, y, *params.values())
    terms[:, 1:].sum(1).mean().backward()
    x = logits.clone().requires_grad_(True)
    get(name, include_background=False, **params)(x, labels).backward()
    torch.testing.assert_close(x.grad.double(), u.grad, rtol=1e-4, atol=1e-8)


# ---------------------------------------------------------------- warnings for flags that cannot apply
@pytest.mark.parametrize("name", ["ce", "focal", "dfl"])
def test_single_channel_without_background_warns_like_monai(name):
    logits = torch.randn(2, 1, 6, 6)
    target = (torch.rand(2, 1, 6, 6) > 0.5).float()
    with pytest.warns(UserWarning, match="single channel prediction, `include_background=False` ignored"):
        value = get(name, include_background=False)(logits, target)
    torch.testing.assert_close(value, get(name)(logits, target))


@pytest.mark.parametrize("name", [n for n in ALL if loss_class(n).background_scope == "unused"])
def test_losses_over_all_classes_warn_on_include_background_false(name):
    with pytest.warns(UserWarning, match="include_background=False is ignored"):
        make(name, include_background=False)


def test_region_losses_do_not_warn_when_the_flag_applies():
    logits, labels = synthetic_batch(batch=1, num_classes=3, size=8, dims=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get("dice", include_background=False)(logits, labels)
        get("ce", include_background=False)(logits, labels)


# ---------------------------------------------------------------- second derivatives (13.4)
@pytest.mark.parametrize("name", ["dfl", "focal", "dce"])
def test_hand_written_backward_refuses_a_second_derivative(name):
    logits, labels = synthetic_batch(batch=1, num_classes=3, size=6, dims=3)
    x = logits.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(get(name)(x, labels), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        torch.autograd.grad((grad * torch.randn_like(grad)).sum(), x)


@pytest.mark.parametrize(
    "terms_fn, params",
    [(dual_focal_terms, (1.0, 1.0, 2.0, 1.0)), (dual_cross_entropy_terms, (1.0, 1.0)), (focal_terms, (2.0,))],
)
def test_plain_formulas_give_hessian_vector_products(terms_fn, params):
    """The plain-autograd forms (the ``reduction="none"`` path) are twice differentiable: their HVP in
    float32 equals float64."""
    logits, labels = synthetic_batch(batch=1, num_classes=3, size=5, dims=3)
    v = torch.randn_like(logits)

    def hvp(dtype):
        u = logits.to(dtype).requires_grad_(True)
        value = terms_fn(u, onehot(labels, 3).to(dtype), *params).sum(1).mean()
        (g,) = torch.autograd.grad(value, u, create_graph=True)
        (h,) = torch.autograd.grad((g * v.to(dtype)).sum(), u)
        return h

    torch.testing.assert_close(hvp(torch.float32).double(), hvp(torch.float64), rtol=1e-3, atol=1e-7)


# ---------------------------------------------------------------- state
def test_recall_ema_counts_travel_with_state_dict():
    logits, labels = synthetic_batch(batch=2, num_classes=3, size=8, dims=3)
    loss = get("recall", ema=0.9)
    for shift in (0.0, 1.0, -1.0):
        loss(logits + shift * torch.randn_like(logits), labels)
    restored = get("recall", ema=0.9)
    restored.load_state_dict(loss.state_dict())
    assert set(loss.state_dict()) == {"tp_ema", "fn_ema"}
    torch.testing.assert_close(restored(logits, labels), loss(logits, labels))
    assert not torch.allclose(get("recall", ema=0.9)(logits, labels), restored(logits, labels))
    get("recall", ema=0.9).load_state_dict({})  # a state saved before the counts were persistent


# ---------------------------------------------------------------- docs
def test_docs_conventions_table_matches_the_code():
    text = DOCS.read_text()
    match = re.search(r"<!-- conventions-table -->\n(.*?)\n<!-- /conventions-table -->", text, re.S)
    assert match, "docs/losses.md must hold the generated table between conventions-table markers"
    assert match.group(1).strip() == conventions_table().strip(), (
        "regenerate with: python -m segbalance.monai_losses.conventions docs/losses.md"
    )


# ---------------------------------------------------------------- docs/adding-a-loss.md's example
ADDING_A_LOSS = Path(__file__).resolve().parents[1] / "docs" / "adding-a-loss.md"

RECIPE_CHECK = """
import torch
from segbalance.loss_table import synthetic_batch
from segbalance.monai_losses import get

logits, labels = synthetic_batch(batch=2, num_classes=3, size=6, dims=3)
mean, total = get("sq_error")(logits, labels), get("sq_error", reduction="sum")(logits, labels)
none = get("sq_error", reduction="none")(logits, labels)
assert tuple(none.shape) == (2, 3, 6, 6, 6), none.shape  # its declared none_style "voxel"
torch.testing.assert_close(none.sum(1).mean(), mean)
torch.testing.assert_close(none.sum(), total)
terms = (torch.softmax(logits, 1) - torch.nn.functional.one_hot(labels[:, 0], 3).movedim(-1, 1)).square()
no_bg = get("sq_error", include_background=False)
torch.testing.assert_close(no_bg(logits, labels), terms[:, 1:].sum(1).mean())  # "class_sum"
assert tuple(get("sq_error", include_background=False, reduction="none")(logits, labels).shape)[:2] == (2, 2)
"""


REGION_RECIPE_CHECK = """
import pytest
import torch
from segbalance.loss_table import synthetic_batch
from segbalance.monai_losses import get

logits, labels = synthetic_batch(batch=2, num_classes=3, size=6, dims=3)
z = torch.softmax(logits, 1)
g = torch.nn.functional.one_hot(labels[:, 0], 3).movedim(-1, 1).float()
by_hand = 1 - ((z * g).sum((2, 3, 4)) + 1e-5) / (z.sum((2, 3, 4)) + 1e-5)  # (B, C)
none = get("soft_precision", reduction="none")(logits, labels)
assert tuple(none.shape) == (2, 3, 1, 1, 1), none.shape  # its declared none_style "dice"
torch.testing.assert_close(none.flatten(1), by_hand)
torch.testing.assert_close(get("soft_precision")(logits, labels), by_hand.mean())
no_bg = get("soft_precision", include_background=False, reduction="none")(logits, labels)
torch.testing.assert_close(no_bg.flatten(1), by_hand[:, 1:])  # "channels"
ignored = labels.clone()
ignored[:, :, :2] = 7  # voxels that must not count
masked = get("soft_precision", ignore_index=7)(logits, ignored)
torch.testing.assert_close(masked, get("soft_precision")(logits[..., 2:, :, :], labels[..., 2:, :, :]))
binary = get("soft_precision", reduction="none")(logits[:, 1:2], (labels > 0).long())
assert tuple(binary.shape) == (2, 1, 1, 1, 1)  # p.binary: the foreground channel only
with pytest.raises(ValueError, match="SoftPrecisionLoss: smooth must be >= 0"):
    get("soft_precision", smooth=-1)
"""


@pytest.mark.parametrize(
    ("loss", "check"), [("sq_error", RECIPE_CHECK), ("soft_precision", REGION_RECIPE_CHECK)]
)
def test_adding_a_loss_example_keeps_the_declared_conventions(tmp_path, loss, check):
    """The recipe's example losses (per-voxel and region), loaded as plugins in a fresh process, honour the
    ``none_style`` and ``background_scope`` they declare (what the shared convention tests check of every
    registered loss)."""
    import os
    import subprocess
    import sys

    blocks = re.findall(r"```python\n(.*?)```", ADDING_A_LOSS.read_text(), re.S)
    module = next(b for b in blocks if f'@register("{loss}"' in b)
    (tmp_path / f"recipe_{loss}.py").write_text(module)
    env = dict(os.environ, SEGBALANCE_PLUGINS=f"recipe_{loss}")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    result = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_adding_a_loss_names_what_a_contributor_needs():
    """The recipe names the region-loss helpers, how to choose none_style, EXAMPLE_KWARGS, the files that
    iterate over every loss and the commands to run; it asks for no edit of a generated list."""
    text = ADDING_A_LOSS.read_text()
    for needed in ("p.class_channels(", "p.valid_float", "p.binary", "none_style", "EXAMPLE_KWARGS",
                   "tests/test_losses_common.py", "tests/test_losses_compile.py", "python -m pytest",
                   "python -m segbalance.monai_losses.conventions docs/losses.md"):
        assert needed in text, needed
    assert "add the loss to the independence check" not in text


def test_multilabel_form_follows_the_one_register_declaration():
    """Per-voxel losses average a multi-label input over its channels exactly when the registry lists
    them as multi-label: ``@register(..., multilabel=True)`` sets both."""
    from segbalance.monai_losses.registry import multilabel_names

    multilabel = set(multilabel_names())
    voxel = [n for n in ALL if hasattr(loss_class(n), "multilabel_form")]
    assert {"ce", "wce", "focal", "dfl", "recall", "topk"} <= set(voxel)
    for name in voxel:
        assert loss_class(name).multilabel_form == (name in multilabel), name


def test_write_conventions_table_rewrites_only_the_block(tmp_path):
    from segbalance.monai_losses.conventions import TABLE_MARKERS, write_conventions_table

    doc = tmp_path / "losses.md"
    doc.write_text(f"intro\n{TABLE_MARKERS[0]}\n| stale |\n{TABLE_MARKERS[1]}\noutro\n", encoding="utf-8")
    assert write_conventions_table(doc)
    assert doc.read_text(encoding="utf-8") == (
        f"intro\n{TABLE_MARKERS[0]}\n{conventions_table()}\n{TABLE_MARKERS[1]}\noutro\n"
    )
    assert not write_conventions_table(doc)
    doc.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="conventions-table"):
        write_conventions_table(doc)
