"""The classes segbalance exports under MONAI's names behave as MONAI's: same constructor (positions,
names, defaults), ``forward(input, target)``, values, shapes, warnings and error types, 1D to 3D inputs.

Each case builds the same loss from segbalance and, where MONAI is installed, from ``monai.losses`` and
compares both on the same inputs; the error-message and TorchScript checks run without MONAI too.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import segbalance.monai_losses as sb
from segbalance.monai_losses import get, loss_class
from segbalance.monai_losses.arguments import LossArgumentError
from segbalance.monai_losses.monai_common import NotScriptableError

try:
    import monai.losses as monai_losses
except ImportError:  # the error and TorchScript checks still run
    monai_losses = None

needs_monai = pytest.mark.skipif(monai_losses is None, reason="MONAI not installed")


def _inputs(
    nd: int, channels: int = 3, labels: bool = False, soft: bool = False, batch: int = 2, seed: int = 0
):
    """``(input, target)``: logits ``(B, C, *spatial)``; a label map ``(B, 1, …)`` or a one-hot (or soft)
    target ``(B, C, …)``."""
    g = torch.Generator().manual_seed(seed)
    spatial = (5, 4, 3)[:nd]
    x = torch.randn(batch, channels, *spatial, generator=g)
    if channels == 1:
        return x, (torch.rand(batch, 1, *spatial, generator=g) > 0.5).float()
    y = torch.randint(0, channels, (batch, 1, *spatial), generator=g)
    if labels:
        return x, y
    if soft:
        return x, torch.rand(batch, channels, *spatial, generator=g).softmax(1)
    return x, torch.zeros(batch, channels, *spatial).scatter_(1, y, 1.0)


def _run(loss, x, y):
    """``loss(input=x, target=y)`` with the warnings it gave (their messages, in order)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = loss(input=x, target=y)
    return value, [str(w.message) for w in caught if "deprecated" not in str(w.message)]


# (class, positional args, keyword args, inputs: dict for _inputs)
CASES = [
    ("DiceLoss", (), {}, {}),
    (
        "DiceLoss",
        (True, True, False, True),
        {},
        {"labels": True},
    ),  # include_background, to_onehot_y, sigmoid, softmax
    ("DiceLoss", (), {"sigmoid": True, "squared_pred": True}, {}),
    ("DiceLoss", (), {"other_act": torch.tanh, "jaccard": True, "reduction": "none"}, {}),
    ("DiceLoss", (), {"softmax": True, "batch": True, "reduction": "none"}, {}),
    ("DiceLoss", (), {"softmax": True, "weight": [1.0, 2.0, 3.0], "reduction": "sum"}, {}),
    ("DiceLoss", (), {"softmax": True, "include_background": False, "weight": [2.0, 0.5]}, {}),
    ("DiceLoss", (), {"softmax": True, "weight": 2}, {}),
    ("DiceLoss", (), {"softmax": True, "soft_label": True}, {"soft": True}),
    ("DiceLoss", (), {"softmax": True, "to_onehot_y": True, "ignore_index": 1}, {"labels": True}),
    ("DiceLoss", (), {"sigmoid": True}, {"channels": 1}),
    ("DiceLoss", (), {"softmax": True, "include_background": False, "to_onehot_y": True}, {"channels": 1}),
    ("GeneralizedDiceLoss", (), {}, {}),
    ("GeneralizedDiceLoss", (False, True, False, True, None, "simple"), {}, {"labels": True}),
    (
        "GeneralizedDiceLoss",
        (),
        {"softmax": True, "w_type": "uniform", "batch": True, "reduction": "none"},
        {},
    ),
    ("GeneralizedDiceLoss", (), {"sigmoid": True, "soft_label": True, "reduction": "sum"}, {"soft": True}),
    ("GeneralizedDiceLoss", (), {"other_act": torch.tanh, "reduction": "none"}, {}),
    ("GeneralizedDiceLoss", (), {"sigmoid": True}, {"channels": 1}),
    ("DiceCELoss", (), {}, {}),
    ("DiceCELoss", (True, True, False, True), {}, {"labels": True}),
    ("DiceCELoss", (), {"softmax": True, "weight": torch.tensor([1.0, 2.0, 3.0]), "lambda_dice": 0.3}, {}),
    (
        "DiceCELoss",
        (),
        {"softmax": True, "include_background": False, "weight": torch.tensor([1.0, 2.0, 3.0])},
        {},
    ),
    ("DiceCELoss", (), {"softmax": True, "reduction": "sum", "label_smoothing": 0.1, "batch": True}, {}),
    ("DiceCELoss", (), {"sigmoid": True, "lambda_ce": 2.0}, {"channels": 1}),
    ("FocalLoss", (), {}, {}),
    (
        "FocalLoss",
        (True, True, 1.5, 0.25),
        {},
        {"labels": True},
    ),  # include_background, to_onehot_y, gamma, alpha
    ("FocalLoss", (), {"use_softmax": True, "alpha": [0.2, 0.3, 0.5]}, {}),
    ("FocalLoss", (), {"use_softmax": True, "alpha": 0.25, "reduction": "none"}, {}),
    ("FocalLoss", (), {"use_softmax": True, "alpha": 0.25, "include_background": False}, {}),
    ("FocalLoss", (), {"weight": [1.0, 2.0, 3.0], "reduction": "sum"}, {}),
    ("FocalLoss", (), {"weight": 2.0, "gamma": 0.0}, {"soft": True}),
    ("FocalLoss", (), {"to_onehot_y": True, "ignore_index": 2, "use_softmax": True}, {"labels": True}),
    ("FocalLoss", (), {"to_onehot_y": True, "ignore_index": 2, "reduction": "sum"}, {"labels": True}),
    ("FocalLoss", (), {"include_background": False, "to_onehot_y": True}, {"channels": 1}),
    ("TverskyLoss", (), {}, {}),
    ("TverskyLoss", (True, True, False, True, None, 0.3, 0.7), {}, {"labels": True}),
    ("TverskyLoss", (), {"softmax": True, "alpha": 0.8, "beta": 0.2, "batch": True, "reduction": "none"}, {}),
    ("TverskyLoss", (), {"sigmoid": True, "soft_label": True, "reduction": "sum"}, {"soft": True}),
    ("TverskyLoss", (), {"softmax": True, "to_onehot_y": True, "ignore_index": 0}, {"labels": True}),
    ("TverskyLoss", (), {"other_act": torch.tanh, "include_background": False}, {}),
    ("TverskyLoss", (), {"softmax": True}, {"channels": 1}),
    ("HausdorffDTLoss", (), {}, {}),
    (
        "HausdorffDTLoss",
        (1.0, True, True, False, True),
        {},
        {"labels": True},
    ),  # alpha, background, onehot, sig, soft
    ("HausdorffDTLoss", (), {"softmax": True, "batch": True, "reduction": "none"}, {}),
    ("HausdorffDTLoss", (), {"sigmoid": True, "reduction": "sum"}, {"channels": 1}),
]


def _case_id(case) -> str:
    name, args, kwargs, data = case
    parts = [repr(a) for a in args] + [f"{k}={getattr(v, '__name__', v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})-{'/'.join(f'{k}={v}' for k, v in data.items())}"


@needs_monai
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_equals_monai(case, nd):
    name, args, kwargs, data = case
    if name == "HausdorffDTLoss" and nd == 1:
        pytest.skip("HausdorffDTLoss takes 2D and 3D inputs only (as MONAI): tested in test_errors_as_monai")
    x, y = _inputs(nd, **data)
    ours, our_warnings = _run(getattr(sb, name)(*args, **kwargs), x, y)
    theirs, their_warnings = _run(getattr(monai_losses, name)(*args, **kwargs), x, y)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert our_warnings == their_warnings


@needs_monai
@pytest.mark.parametrize("name", sb.MONAI_NAMED)
def test_same_signature_as_monai(name):
    import inspect

    ours = inspect.signature(getattr(sb, name).__init__).parameters
    theirs = inspect.signature(getattr(monai_losses, name).__init__).parameters
    shared = list(ours)[: len(theirs)]
    assert shared == list(theirs), "MONAI's parameters first, in MONAI's order"
    for p in list(ours.values())[len(theirs) :]:
        assert p.kind is p.KEYWORD_ONLY, f"segbalance's extra {p.name!r} must be keyword-only"
    for key in theirs:
        default = theirs[key].default
        assert ours[key].default == getattr(default, "value", default), key
    assert list(inspect.signature(getattr(sb, name).forward).parameters) == ["self", "input", "target"]


@needs_monai
@pytest.mark.parametrize("name", sb.MONAI_NAMED)
def test_gradients_equal_monai(name):
    kwargs = {"softmax": True} if name != "FocalLoss" else {"use_softmax": True}
    x, y = _inputs(2)
    grads = []
    for module in (sb, monai_losses):
        xi = x.clone().requires_grad_(True)
        getattr(module, name)(**kwargs)(xi, y).backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


# (class, constructor kwargs, call inputs or None: the constructor raises)
ERRORS = [
    ("DiceLoss", {"sigmoid": True, "softmax": True}, None),
    ("DiceLoss", {"other_act": "tanh"}, None),
    ("DiceLoss", {"reduction": "unknown"}, None),
    ("DiceLoss", {}, (torch.ones(1, 2, 4), torch.ones(1, 3, 4))),
    ("DiceLoss", {"weight": [1.0, 2.0, 3.0]}, (torch.ones(1, 2, 4), torch.ones(1, 2, 4))),
    ("DiceLoss", {"weight": [-1.0, 2.0]}, (torch.ones(1, 2, 4), torch.ones(1, 2, 4))),
    ("DiceLoss", {"to_onehot_y": True}, (torch.ones(1, 2, 4), torch.full((1, 1, 4), 5))),
    ("FocalLoss", {"to_onehot_y": True}, (torch.ones(1, 2, 4), torch.full((1, 1, 4), -1))),
    ("GeneralizedDiceLoss", {"w_type": "cubic"}, None),
    ("GeneralizedDiceLoss", {}, (torch.ones(1, 2, 4, 4), torch.ones(1, 3, 4, 4))),
    ("DiceCELoss", {"reduction": "none"}, None),
    ("DiceCELoss", {"lambda_dice": -1.0}, None),
    ("DiceCELoss", {}, (torch.ones(1, 2, 4, 4), torch.ones(1, 4, 4))),
    ("DiceCELoss", {}, (torch.ones(1, 2, 4, 4), torch.ones(1, 3, 4, 4))),
    (
        "FocalLoss",
        {"use_softmax": True, "alpha": [0.1, 0.2, 0.3]},
        (torch.ones(1, 2, 4), torch.ones(1, 2, 4)),
    ),
    ("FocalLoss", {"weight": [1.0, 2.0, 3.0]}, (torch.ones(1, 2, 4), torch.ones(1, 2, 4))),
    ("FocalLoss", {"weight": [1.0, 2.0]}, (torch.ones(1, 1, 4), torch.ones(1, 1, 4))),
    ("FocalLoss", {}, (torch.ones(1, 2, 4), torch.ones(1, 3, 4))),
    ("TverskyLoss", {"sigmoid": True, "other_act": torch.tanh}, None),
    ("TverskyLoss", {}, (torch.ones(1, 2, 4), torch.ones(1, 3, 4))),
    ("HausdorffDTLoss", {"softmax": True, "sigmoid": True}, None),
    ("HausdorffDTLoss", {}, (torch.ones(1, 2, 4), torch.ones(1, 2, 4))),
    ("HausdorffDTLoss", {}, (torch.ones(1, 1, 2, 3), torch.ones(1, 4, 5, 6))),
]


def _raised(make, inputs):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss = make()
            if inputs is not None:
                loss(*inputs)
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        return exc
    return None


@pytest.mark.parametrize("case", ERRORS, ids=[f"{c[0]}-{i}" for i, c in enumerate(ERRORS)])
def test_errors_as_monai(case):
    """Ours raises a ValueError naming the class wherever MONAI raises, of MONAI's type as well."""
    name, kwargs, inputs = case
    ours = _raised(lambda: getattr(sb, name)(**kwargs), inputs)
    assert isinstance(ours, ValueError), f"{name}: expected a ValueError, got {ours!r}"
    assert name in str(ours) or "target" in str(ours)
    if monai_losses is not None:
        theirs = _raised(lambda: getattr(monai_losses, name)(**kwargs), inputs)
        assert theirs is not None
        assert isinstance(ours, type(theirs)), (
            f"MONAI raises {type(theirs).__name__}, ours {type(ours).__name__}"
        )


@pytest.mark.parametrize("name", sb.MONAI_NAMED)
def test_unknown_argument_names_class_and_lists_valid_ones(name):
    with pytest.raises(
        ValueError,
        match=rf"^{name} got unknown argument\(s\) 'fp_weight'.*valid arguments: "
        r"include_background|alpha",
    ) as info:
        getattr(sb, name)(fp_weight=0.3)
    assert isinstance(info.value, TypeError)  # what MONAI (Python) raises there
    assert "get(" in str(info.value)  # points to segbalance's own form


def test_surplus_positional_argument_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"DiceLoss: .*positional arguments: include_background, to_onehot_y"
    ):
        sb.DiceLoss(*([False] * 15))


def test_registry_losses_name_themselves():
    """Registry losses: an unknown or positional argument names the loss and lists the valid ones."""
    with pytest.raises(
        ValueError,
        match=r"SoftTverskyLoss got unknown argument\(s\) 'alpha'; valid arguments: "
        r"fp_weight, fn_weight, batch, smooth_nr, smooth_dr, include_background",
    ):
        get("tversky", alpha=0.3)
    with pytest.raises(
        LossArgumentError, match=r"SoftDiceLoss: .*positional arguments: none \(keywords only\)"
    ):
        loss_class("dice")(True)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("dfl", {"alpha": [1, 2, 3]}, r"DualFocalLoss: alpha must be a real number, got \[1, 2, 3\]"),
        ("dfl", {"rho": 0.5}, r"DualFocalLoss: rho .* must be >= 1, got 0.5"),
        ("dfl", {"gamma": "2"}, r"DualFocalLoss: gamma must be a real number"),
        ("dce", {"alpha": 0}, r"DualCrossEntropyLoss: alpha .* must be > 0"),
        ("focal", {"gamma": None}, r"SoftmaxFocalLoss: gamma must be a real number"),
        ("tversky", {"fn_weight": -1}, r"SoftTverskyLoss: fn_weight must be >= 0"),
        ("dice", {"smooth_nr": [1e-5]}, r"SoftDiceLoss: smooth_nr must be a real number"),
    ],
)
def test_bad_values_are_value_errors_naming_the_argument(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        get(name, **kwargs)


def test_numbers_may_be_zero_dim_tensors():
    """As MONAI (``float(smooth_nr)``), a 0-dim tensor is a number; a 1-element list is not."""
    assert sb.DiceLoss(smooth_nr=torch.tensor(0.5)).smooth_nr == 0.5
    assert get("dfl", alpha=torch.tensor(2.0)).alpha == 2.0


def test_registry_names_keep_segbalance_forms():
    """The registry losses are segbalance's forms, not the MONAI-named classes (published numbers)."""
    for registry, monai_name in [
        ("dice", "DiceLoss"),
        ("gdl", "GeneralizedDiceLoss"),
        ("dice_ce", "DiceCELoss"),
        ("focal", "FocalLoss"),
        ("tversky", "TverskyLoss"),
        ("hd_dt", "HausdorffDTLoss"),
    ]:
        assert loss_class(registry) is not getattr(sb, monai_name)
    x, y = _inputs(2, labels=True)
    paper = get("focal")(x, y)  # the focal term summed over classes
    monai_value = sb.FocalLoss(to_onehot_y=True, use_softmax=True)(x, y)
    torch.testing.assert_close(paper, 3 * monai_value)


SCRIPTABLE = [
    ("DiceLoss", {}),
    ("DiceLoss", {"softmax": True, "to_onehot_y": True, "weight": [1.0, 2.0, 3.0], "ignore_index": 1}),
    ("GeneralizedDiceLoss", {"softmax": True, "to_onehot_y": True, "w_type": "simple", "batch": True}),
    ("DiceCELoss", {"softmax": True, "to_onehot_y": True}),
    ("FocalLoss", {}),
    ("FocalLoss", {"use_softmax": True, "to_onehot_y": True, "alpha": 0.25, "ignore_index": 1}),
    ("TverskyLoss", {"sigmoid": True, "to_onehot_y": True, "alpha": 0.3, "beta": 0.7}),
]


@pytest.mark.parametrize(("name", "kwargs"), SCRIPTABLE, ids=[c[0] for c in SCRIPTABLE])
def test_torchscript_equals_eager(name, kwargs):
    loss = getattr(sb, name)(**kwargs)
    x, y = _inputs(2, labels=kwargs.get("to_onehot_y", False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated in torch >= 2.10
        scripted = torch.jit.script(loss)
    torch.testing.assert_close(scripted(x, y), loss(x, y))


def test_hausdorff_is_not_scriptable_with_a_clear_error():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NotScriptableError, match="HausdorffDTLoss cannot be scripted"):
            torch.jit.script(sb.HausdorffDTLoss())


def test_hausdorff_spacing_extra():
    """``spacing`` scales the distances: an isotropic spacing s multiplies the loss by s^alpha."""
    x, y = _inputs(2)
    base = sb.HausdorffDTLoss(softmax=True)(x, y)
    torch.testing.assert_close(sb.HausdorffDTLoss(softmax=True, spacing=2.0)(x, y), 4 * base)


@pytest.mark.parametrize("name", ["dice", "focal", "dfl", "tversky"])
def test_registry_softmax_with_one_channel_warns_as_monai(name):
    """Where MONAI warns (``softmax=True`` with one channel) the registry losses warn too, and read the
    channel as the binary task's sigmoid logit (their default for ``C == 1``)."""
    x, y = _inputs(2, channels=1)
    with pytest.warns(UserWarning, match=r"single channel prediction, `softmax=True` ignored"):
        value = get(name, softmax=True)(x, y)
    torch.testing.assert_close(value, get(name)(x, y))
