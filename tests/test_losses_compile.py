"""``torch.compile`` (inductor, CPU): a compiled loss gives the eager loss's value and gradient.

The default run compiles three representative losses (each compile takes ~30 s on the CPU): ``dfl`` (a
hand-written autograd Function), ``dice_ce`` (region + voxel terms sharing one prepared input) and
``gdl_boundary`` (host distance transforms, precomputed ``dist`` passed through). The ``slow`` test
compiles every registered loss.
"""

from __future__ import annotations

import pytest
import torch

from segbalance.loss_table import EXAMPLE_KWARGS, synthetic_batch
from segbalance.monai_losses import compile_loss, get, is_compiled, names
from segbalance.monai_losses.distance import signed_distance_map
from segbalance.monai_losses.schedules import set_schedulers_epoch


def make(name: str, **kwargs):
    return get(name, **{**EXAMPLE_KWARGS.get(name, {}), **kwargs})


def check_same_as_eager(name: str, *args, **kwargs) -> None:
    logits, labels = synthetic_batch(batch=2, num_classes=3, size=10, dims=3)
    eager, compiled = make(name, **kwargs), compile_loss(make(name, **kwargs))
    x_eager = logits.clone().requires_grad_(True)
    x_comp = logits.clone().requires_grad_(True)
    v_eager, v_comp = eager(x_eager, labels, *args), compiled(x_comp, labels, *args)
    v_eager.sum().backward()
    v_comp.sum().backward()
    torch.testing.assert_close(v_comp, v_eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x_comp.grad, x_eager.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", ["dfl", "dice_ce"])
def test_compiled_loss_equals_eager(name):
    check_same_as_eager(name)


def test_compiled_distance_loss_with_precomputed_maps_equals_eager():
    _, labels = synthetic_batch(batch=2, num_classes=3, size=10, dims=3)
    onehot = torch.nn.functional.one_hot(labels[:, 0], 3).movedim(-1, 1)
    check_same_as_eager("gdl_boundary", signed_distance_map(onehot, (1.0, 1.0, 1.0)))


@pytest.mark.slow
@pytest.mark.parametrize("name", names())
def test_every_loss_compiles_to_the_eager_value_and_gradient(name):
    check_same_as_eager(name)


def test_compiling_in_place_keeps_class_state_schedules_and_checks():
    loss = get("gdl_boundary")
    assert compile_loss(loss) is loss and is_compiled(loss) and compile_loss(loss) is loss
    assert type(loss).__name__ == "GeneralizedDiceBoundaryLoss" and loss.reduction == "mean"
    assert set_schedulers_epoch(loss, 4) == [pytest.approx(0.05)]
    recall = compile_loss(get("recall", ema=0.9))
    assert set(recall.state_dict()) == {"tp_ema", "fn_ema"}  # the same keys as the eager loss
    with pytest.raises(ValueError, match="logits"):  # input checks stay eager and keep their messages
        recall(torch.zeros(0, 3, 4, 4), torch.zeros(0, 1, 4, 4, dtype=torch.long))
    compound = compile_loss(get("compound", terms={"ce": 1.0, "dice": 1.0}))
    assert all(is_compiled(t) for t in compound.terms.values())
