"""docs/adding-a-loss.md, followed once: a loss in its own module declares its trainer; nnU-Net finds it.

The toy loss lives in a module written to ``tmp_path`` (outside segbalance), is loaded through
``SEGBALANCE_PLUGINS``, and nnU-Net's own class lookup over the ``nnUNet_extTrainer`` folder finds its
generated trainer and variants — in a subprocess, as ``nnUNetv2_train`` would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("nnunetv2")

from segbalance.monai_losses.registry import PLUGINS_ENV  # noqa: E402
from segbalance.trainers.discovery import ENV_VAR, EXT_FOLDER  # noqa: E402

TOY_MODULE = '''
"""A toy loss: scale · mean over voxels of Σ_c (z_c − y_c)² (z = probabilities)."""
from segbalance.monai_losses.base import SegLoss
from segbalance.monai_losses.inputs import reduce_voxels
from segbalance.monai_losses.registry import register


@register("toy_l2", trainer="ToyL2", trainer_kwargs={"scale": 2.0}, multilabel=True)
class ToyL2Loss(SegLoss):
    """Toy squared-error loss (plugin test)."""

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def forward_prepared(self, p):
        return reduce_voxels(self.scale * (p.probs - p.onehot).square().sum(1), p.valid, self.reduction)
'''

CHECK = """
import json, torch
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
from segbalance.nnunet_losses import build_nnunet_loss
from segbalance.trainers.discovery import EXT_FOLDER

out = {}
for name in ("nnUNetTrainerToyL2", "nnUNetTrainerToyL2_debug", "nnUNetTrainerToyL2_5epochs"):
    cls = recursive_find_python_class(EXT_FOLDER, name, current_module=None)
    out[name] = [cls.__module__, cls.__name__, cls.loss_name, cls.loss_kwargs, cls.__doc__]
out["public"] = recursive_find_trainer_class_by_name("nnUNetTrainerToyL2_debug").__name__
x = torch.tensor([[[[0.0, 2.0]], [[1.0, -1.0]]]])  # (1, 2, 1, 2) logits
y = torch.tensor([[[[1, 0]]]])
cls = recursive_find_python_class(EXT_FOLDER, "nnUNetTrainerToyL2", current_module=None)
out["value"] = float(build_nnunet_loss(cls.loss_name, cls.loss_kwargs)(x, y))
regions = torch.tensor([[[[True, False]], [[True, True]]]])
out["region_value"] = float(build_nnunet_loss(cls.loss_name, cls.loss_kwargs, has_regions=True)(x, regions))
print(json.dumps(out))
"""


def run_with_plugin(tmp_path: Path, code: str) -> str:
    (tmp_path / "toy_segbalance_plugin.py").write_text(TOY_MODULE)
    env = dict(os.environ)
    env.update(
        {
            PLUGINS_ENV: "toy_segbalance_plugin",
            ENV_VAR: EXT_FOLDER,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        }
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_plugin_loss_declares_its_trainer_and_nnunet_finds_it(tmp_path):
    import torch

    out = json.loads(run_with_plugin(tmp_path, textwrap.dedent(CHECK)).strip().splitlines()[-1])
    for suffix in ("", "_debug", "_5epochs"):
        module, name, loss, kwargs, doc = out[f"nnUNetTrainerToyL2{suffix}"]
        assert (module, name) == ("segbalance.trainers.generated", f"nnUNetTrainerToyL2{suffix}")
        assert (loss, kwargs) == ("toy_l2", {"scale": 2.0}) and doc
    assert out["public"] == "nnUNetTrainerToyL2_debug"
    # the trainer's loss by hand: 2 · mean_v Σ_c (softmax − onehot)²
    x = torch.tensor([[[[0.0, 2.0]], [[1.0, -1.0]]]])
    z = torch.softmax(x, 1)
    y = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.0]]]])  # one-hot of the label map [1, 0]
    assert out["value"] == pytest.approx(float(2 * (z - y).square().sum(1).mean()), rel=1e-6)
    # declared multilabel: regions go through the per-channel sigmoid
    yr = torch.tensor([[[[1.0, 0.0]], [[1.0, 1.0]]]])
    expected = float(2 * (torch.sigmoid(x) - yr).square().sum(1).mean())
    assert out["region_value"] == pytest.approx(expected, rel=1e-6)


def test_plugin_trainer_listed_by_cli_and_bad_plugin_named(tmp_path):
    code = "import sys; from segbalance.cli import main; sys.exit(main(['nnunet-env', '--list']))"
    out = run_with_plugin(tmp_path, code)
    assert "# nnUNetTrainerToyL2: loss 'toy_l2'" in out and "# nnUNetTrainerDFL: loss 'dfl'" in out
    env = {**os.environ, PLUGINS_ENV: "no_such_segbalance_plugin"}
    code = "from segbalance.monai_losses import names; names()"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode != 0 and f"{PLUGINS_ENV} names 'no_such_segbalance_plugin'" in result.stderr
