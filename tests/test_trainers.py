"""The segbalance nnU-Net trainers: loss construction, discovery, the JSON trainer, schedules, checkpoints.

Trainers are built cheaply from an in-memory plans dict and dataset.json on the CPU (no network, no data);
each test builds the trainer's loss with ``_build_loss`` and runs it on nnU-Net-shaped per-scale inputs.
Trainers whose loss is not registered yet are skipped with the missing name.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("nnunetv2")

import nnunetv2  # noqa: E402
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper  # noqa: E402
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402

import segbalance.trainers as trainers  # noqa: E402
from segbalance.monai_losses import get, names  # noqa: E402
from segbalance.nnunet_losses import deep_supervision_weights, loss_schedulers  # noqa: E402
from segbalance.trainers import TRAINER_LOSSES, nnUNetTrainerSegBalance  # noqa: E402
from segbalance.trainers.base import loss_state_file  # noqa: E402
from segbalance.trainers.configurable import LOSS_ENV, read_loss_config  # noqa: E402
from segbalance.trainers.discovery import ENV_VAR, EXT_FOLDER, export_line, register  # noqa: E402
from segbalance.trainers.plans import dataset_json as plans_dataset_json  # noqa: E402
from segbalance.trainers.plans import plainconv_plans  # noqa: E402

PATCH = [8, 16, 16]
SPACING = [2.0, 1.0, 1.0]
# output shapes of the 4 deep-supervision scales for these strides
SHAPES = [(8, 16, 16), (8, 8, 8), (4, 4, 4), (2, 2, 2)]
FACTORS = [(1, 1, 1), (1, 2, 2), (2, 4, 4), (4, 8, 8)]
TRAINER_TERMS = {"nnUNetTrainerDFLDice": ["dfl", "dice"], "nnUNetTrainerBoundary": ["gdl_boundary", "gdl"]}

PLANS = plainconv_plans("Dataset990_Unit", PATCH, 2, [4, 8, 16, 16, 16],
                        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]], spacing=SPACING,
                        image_shape=[24, 40, 40])


def dataset_json(ignore: bool = False, regions: bool = False) -> dict:
    return plans_dataset_json(5, ignore=ignore, regions=regions)


def make_trainer(cls, ignore=False, regions=False, fold=0):
    plans = copy.deepcopy(PLANS)
    plans["continue_training"] = False
    return cls(plans, "3d_fullres", fold, dataset_json(ignore, regions), torch.device("cpu"))


def missing_losses(trainer_name: str) -> list[str]:
    needed = TRAINER_TERMS.get(trainer_name, [TRAINER_LOSSES[trainer_name]])
    return [n for n in needed if n not in names()]


def inputs(ignore_label=None, dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    logits = [torch.randn(2, 3, *s, generator=g).to(dtype).requires_grad_() for s in SHAPES]
    top = 4 if ignore_label is not None else 3
    targets = [torch.randint(0, top, (2, 1, *s), generator=g).to(torch.int16) for s in SHAPES]
    return logits, targets


def reference_loss(trainer_name, factor, ignore_label):
    """The table row's loss built directly from the registry for one scale (spacing × pooling factor)."""
    from segbalance.nnunet_losses import accepts_spacing
    from segbalance.trainers.table import trainer_specs

    spec = trainer_specs()[trainer_name]
    kwargs = copy.deepcopy(spec.kwargs)
    if ignore_label is not None:
        kwargs["ignore_index"] = ignore_label
    if accepts_spacing(spec.loss):
        kwargs["spacing"] = tuple(s * f for s, f in zip(SPACING, factor))
    return get(spec.loss, **kwargs)


@pytest.mark.parametrize("trainer_name", sorted(TRAINER_LOSSES))
@pytest.mark.parametrize("ignore", [False, True], ids=["labels", "ignore_label"])
def test_build_loss_deep_supervision_is_weighted_sum(results, trainer_name, ignore):
    missing = missing_losses(trainer_name)
    if missing:
        pytest.skip(f"loss {missing} not registered yet")
    trainer = make_trainer(getattr(trainers, trainer_name), ignore=ignore)
    loss = trainer._build_loss()
    assert isinstance(loss, DeepSupervisionWrapper)
    assert list(loss.weight_factors) == pytest.approx(deep_supervision_weights(4).tolist())
    ignore_label = 3 if ignore else None
    logits, targets = inputs(ignore_label, dtype=torch.float16)
    value = loss(logits, targets)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    expected = sum(
        w * reference_loss(trainer_name, f, ignore_label)(x, t)
        for w, f, x, t in zip(loss.weight_factors, FACTORS, logits, targets)
        if w != 0
    )
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    value.backward()
    assert all(torch.isfinite(x.grad.float()).all() for x in logits[:3])


@pytest.mark.parametrize("trainer_name", sorted(TRAINER_LOSSES))
def test_build_loss_without_deep_supervision(results, trainer_name):
    missing = missing_losses(trainer_name)
    if missing:
        pytest.skip(f"loss {missing} not registered yet")
    trainer = make_trainer(getattr(trainers, trainer_name))
    trainer.enable_deep_supervision = False
    loss = trainer._build_loss()
    assert not isinstance(loss, DeepSupervisionWrapper)
    logits, targets = inputs()
    torch.testing.assert_close(
        loss(logits[0], targets[0]), reference_loss(trainer_name, (1, 1, 1), None)(logits[0], targets[0])
    )


@pytest.mark.parametrize("is_ddp", [False, True])
def test_weights_equal_nnunet_trainer(results, monkeypatch, is_ddp):
    monkeypatch.setenv(LOSS_ENV, '{"name": "ce"}')
    ours, theirs = make_trainer(nnUNetTrainerSegBalance), make_trainer(nnUNetTrainer)
    ours.is_ddp = theirs.is_ddp = is_ddp
    assert list(ours._build_loss().weight_factors) == list(theirs._build_loss().weight_factors)


def test_region_dataset_refused_by_softmax_loss(results, monkeypatch):
    monkeypatch.setenv(LOSS_ENV, '{"name": "ce_kl"}')
    trainer = make_trainer(nnUNetTrainerSegBalance, regions=True)
    assert trainer.label_manager.has_regions
    with pytest.raises(ValueError, match="regions_class_order") as info:
        trainer._build_loss()
    assert "Dataset990_Unit" in str(info.value) and "nnUNetTrainerGDL" in str(info.value)


def test_json_trainer_env_file_log_and_resume(results, monkeypatch, tmp_path):
    config_file = tmp_path / "loss.json"
    config_file.write_text(json.dumps({"name": "ce", "kwargs": {"reduction": "mean"}}))
    monkeypatch.setenv(LOSS_ENV, str(config_file))
    trainer = make_trainer(nnUNetTrainerSegBalance)
    loss = trainer._build_loss()
    logits, targets = inputs()
    expected = sum(w * get("ce")(x, t) for w, x, t in zip(deep_supervision_weights(4), logits, targets))
    torch.testing.assert_close(loss(logits, targets), expected)
    log = Path(trainer.log_file).read_text()
    assert 'segbalance loss: {"name": "ce", "kwargs": {"reduction": "mean"}}' in log
    saved = Path(trainer.output_folder) / "segbalance_loss.json"
    assert json.loads(saved.read_text())["name"] == "ce"
    # a resumed run without the variable reads the saved configuration back
    monkeypatch.delenv(LOSS_ENV)
    assert make_trainer(nnUNetTrainerSegBalance)._build_loss() is not None
    # a fresh output folder without the variable: clear error naming the variable
    with pytest.raises(ValueError, match=LOSS_ENV):
        make_trainer(nnUNetTrainerSegBalance, fold=1)._build_loss()


def test_read_loss_config_errors(tmp_path):
    assert read_loss_config('{"name": "dfl", "kwargs": {"beta": 2}}') == {
        "name": "dfl",
        "kwargs": {"beta": 2},
    }
    assert read_loss_config('{"name": "dfl"}') == {"name": "dfl", "kwargs": {}}
    with pytest.raises(ValueError, match=LOSS_ENV):
        read_loss_config("{not json")
    with pytest.raises(ValueError, match="unknown keys"):
        read_loss_config('{"name": "dfl", "kwarg": {}}')
    with pytest.raises(ValueError, match="name"):
        read_loss_config('{"kwargs": {}}')
    with pytest.raises(FileNotFoundError, match="no_such.json"):
        read_loss_config(str(tmp_path / "no_such.json"))


def test_unknown_loss_in_json_trainer_names_known_losses(results, monkeypatch):
    monkeypatch.setenv(LOSS_ENV, '{"name": "no_such_loss"}')
    with pytest.raises(ValueError, match="known losses"):
        make_trainer(nnUNetTrainerSegBalance)._build_loss()


def test_trainer_names_do_not_clash_with_nnunet():
    source = "\n".join(p.read_text() for p in Path(nnunetv2.__path__[0]).rglob("*.py"))
    ours = [*TRAINER_LOSSES, "nnUNetTrainerSegBalance"]
    ours += [n + s for n in ours for s in ("_5epochs", "_debug")]
    assert not [n for n in ours if f"class {n}(" in source]


def test_register_appends_and_is_idempotent():
    env = {ENV_VAR: "/opt/my_trainers"}
    value = register(env)
    assert value.split(os.pathsep) == ["/opt/my_trainers", EXT_FOLDER]
    assert register(env) == value
    assert register({}) == EXT_FOLDER
    assert export_line("") == f"export {ENV_VAR}={EXT_FOLDER}"


def test_nnunet_finds_our_classes_through_ext_trainer(monkeypatch):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from segbalance.trainers import generated

    monkeypatch.delenv(ENV_VAR, raising=False)
    register()
    assert recursive_find_trainer_class_by_name("nnUNetTrainerDFL") is trainers.nnUNetTrainerDFL
    found = recursive_find_trainer_class_by_name("nnUNetTrainerBoundary_debug")
    assert found is generated.nnUNetTrainerBoundary_debug
    assert found.__module__ == "segbalance.trainers.generated"  # importable, so checkpoints/pickles resolve
    assert "segbalance_nnunet_trainers" not in sys.modules  # nnU-Net drops the shim module again


def test_every_table_row_is_generated_found_by_nnunet_and_picklable():
    """Each trainer name of the table (and its variants) is found by nnU-Net's own class lookup over the
    ``nnUNet_extTrainer`` folder, trains with the row's loss, and pickles by reference."""
    import pickle

    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from segbalance.trainers import generated
    from segbalance.trainers.table import CONFIGURABLE_TRAINER, VARIANTS, trainer_specs

    specs = trainer_specs()
    expected = trainers.trainer_names()
    assert len(expected) == (len(specs) + 1) * (1 + len(VARIANTS))
    assert set(expected) | {"SegBalanceTrainer"} == set(generated.__all__)
    for name in expected:
        cls = recursive_find_python_class(EXT_FOLDER, name, current_module=None)
        assert cls is getattr(generated, name) is getattr(trainers, name), name
        assert issubclass(cls, nnUNetTrainer) and pickle.loads(pickle.dumps(cls)) is cls
        base = name.removesuffix("_debug").removesuffix("_5epochs")
        if base != CONFIGURABLE_TRAINER:
            assert (cls.loss_name, cls.loss_kwargs) == (specs[base].loss, specs[base].kwargs)
            assert cls.__doc__


def test_nnunet_env_command_exports_for_eval():
    segbalance = Path(sys.executable).parent / "segbalance"
    script = f'eval "$("{segbalance}" nnunet-env)"; printf %s "${ENV_VAR}"'
    env = {**os.environ, ENV_VAR: "/opt/a"}
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split(os.pathsep) == ["/opt/a", EXT_FOLDER]


def test_short_variants_training_length(results):
    debug = make_trainer(trainers.nnUNetTrainerDFL_debug)
    assert (debug.num_epochs, debug.num_iterations_per_epoch, debug.num_val_iterations_per_epoch) == (2, 2, 1)
    assert debug.save_every == 1
    five = make_trainer(trainers.nnUNetTrainerGDL_5epochs)
    assert (five.num_epochs, five.num_iterations_per_epoch) == (5, 250)
    assert isinstance(five, trainers.nnUNetTrainerGDL)


def initialized(trainer, tmp_path):
    """``trainer.initialize()`` (network, optimizer, loss) without preprocessed data: nnU-Net only infers the
    dataset class from the file endings of the preprocessed folder there."""
    folder = tmp_path / "preprocessed"
    folder.mkdir(exist_ok=True)
    (folder / "case0.b2nd").touch()
    trainer.preprocessed_dataset_folder = str(folder)
    trainer.initialize()
    return trainer


def test_boundary_trainer_resumed_from_its_checkpoint_has_the_same_alpha(results, tmp_path):
    """nnU-Net's own save/load: α follows the restored epoch; the checkpoint holds no loss state."""
    trainer = initialized(make_trainer(trainers.nnUNetTrainerBoundary_debug), tmp_path)
    trainer.current_epoch = 3
    trainer.on_train_epoch_start()
    assert loss_schedulers(trainer.loss)[0].alpha == pytest.approx(0.04)
    ckpt = str(Path(trainer.output_folder) / "checkpoint_latest.pth")
    trainer.save_checkpoint(ckpt)  # nnU-Net stores current_epoch + 1
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert not [k for k in checkpoint if "segbalance" in k]
    assert not os.path.exists(loss_state_file(ckpt))  # α is a function of the epoch: nothing beside it
    trainer.current_epoch = 4
    trainer.on_train_epoch_start()

    resumed = initialized(make_trainer(trainers.nnUNetTrainerBoundary_debug), tmp_path)
    resumed.load_checkpoint(ckpt)
    assert resumed.current_epoch == 4
    resumed.on_train_epoch_start()
    assert (
        loss_schedulers(resumed.loss)[0].alpha
        == loss_schedulers(trainer.loss)[0].alpha
        == pytest.approx(0.05)
    )
    log = Path(resumed.log_file).read_text()
    assert "segbalance loss schedule: alpha = 0.05" in log


def test_recall_ema_survives_resume(results, monkeypatch, tmp_path):
    monkeypatch.setenv(LOSS_ENV, '{"name": "recall", "kwargs": {"ema": 0.9}}')
    trainer = initialized(make_trainer(trainers.nnUNetTrainerSegBalance_debug), tmp_path)
    logits, targets = inputs()
    trainer.loss(logits, targets)
    trainer.loss(*inputs())
    state = trainer.loss_state()
    assert state and all(v.numel() == 3 for v in state.values())
    ckpt = str(Path(trainer.output_folder) / "checkpoint_latest.pth")
    trainer.save_checkpoint(ckpt)
    assert set(torch.load(loss_state_file(ckpt), weights_only=True)) == set(state)

    resumed = initialized(make_trainer(trainers.nnUNetTrainerSegBalance_debug), tmp_path)
    resumed.load_checkpoint(ckpt)
    restored = resumed.loss_state()
    assert set(restored) == set(state)
    for key in state:
        torch.testing.assert_close(restored[key], state[key])
    resumed.loss.eval(), trainer.loss.eval()
    torch.testing.assert_close(resumed.loss(logits, targets), trainer.loss(logits, targets))


def test_shim_module_exports_every_trainer_and_cli_stays_light():
    from segbalance.trainers.nnunet_ext import segbalance_nnunet_trainers as shim

    expected = trainers.trainer_names()
    assert expected and [n for n in expected if getattr(shim, n, None) is not getattr(trainers, n)] == []
    code = "import sys, segbalance.trainers.cli; print('nnunetv2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_docs_trainer_table_matches_the_generated_table():
    """docs/nnunet.md lists every built-in trainer with its loss and region support, as generated."""
    from segbalance.monai_losses.registry import supports_multilabel
    from segbalance.trainers.table import BUILTIN_TRAINERS

    text = (Path(__file__).resolve().parents[1] / "docs" / "nnunet.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("nnUNetTrainer") and cells[1] != "any":
            rows[cells[0]] = (cells[1], cells[3] == "✓")
    expected = {n: (s.loss, supports_multilabel(s.loss, s.kwargs)) for n, s in BUILTIN_TRAINERS.items()}
    assert rows == expected


# ------------------------------------------------------------------------- plan's batch_dice, compiled losses


def make_trainer_batch_dice(cls, batch_dice, **kwargs):
    trainer_plans = copy.deepcopy(PLANS)
    trainer_plans["configurations"]["3d_fullres"]["batch_dice"] = batch_dice
    trainer_plans["continue_training"] = False
    ignore, regions = kwargs.get("ignore", False), kwargs.get("regions", False)
    return cls(trainer_plans, "3d_fullres", 0, dataset_json(ignore, regions), torch.device("cpu"))


@pytest.mark.parametrize("batch_dice", [True, False])
def test_batch_flag_follows_the_plans_batch_dice(results, monkeypatch, batch_dice):
    """``batch`` of every loss (or term, or boundary pairing's region loss) that has one follows the plan's
    ``configuration_manager.batch_dice``; an explicit ``batch`` in the loss arguments wins."""
    gdl = make_trainer_batch_dice(trainers.nnUNetTrainerGDL, batch_dice)._build_loss().loss
    assert gdl.batch is batch_dice
    compound = make_trainer_batch_dice(trainers.nnUNetTrainerDFLDice, batch_dice)._build_loss().loss
    assert compound.terms["dice"].batch is batch_dice
    boundary = make_trainer_batch_dice(trainers.nnUNetTrainerBoundary, batch_dice)._build_loss().loss
    assert all(scale.region_loss.batch is batch_dice for scale in boundary.losses.values())
    dfl = make_trainer_batch_dice(trainers.nnUNetTrainerDFL, batch_dice)._build_loss().loss
    assert not hasattr(dfl, "batch")  # no batch flag: nothing set
    monkeypatch.setenv(LOSS_ENV, json.dumps({"name": "tversky", "kwargs": {"batch": not batch_dice}}))
    explicit = make_trainer_batch_dice(nnUNetTrainerSegBalance, batch_dice)._build_loss().loss
    assert explicit.batch is (not batch_dice)
    # the values: the trainer's GDL is the registry loss with batch=batch_dice
    trainer = make_trainer_batch_dice(trainers.nnUNetTrainerGDL, batch_dice)
    trainer.enable_deep_supervision = False
    logits, targets = inputs()
    value = trainer._build_loss()(logits[0], targets[0])
    torch.testing.assert_close(value, get("gdl", batch=batch_dice)(logits[0], targets[0]))
    assert value != get("gdl", batch=not batch_dice)(logits[0], targets[0])
    assert f"batch_dice {batch_dice}" in Path(trainer.log_file).read_text()


@pytest.mark.parametrize("batch_dice", [True, False])
def test_region_dice_with_plans_batch_dice_equals_nnunet_dice_term(results, monkeypatch, batch_dice):
    """On a region dataset with ignore label, ``dice`` in the trainer = 1 + the Dice term of nnU-Net's own
    ``nnUNetTrainer._build_loss`` (``DC_and_BCE_loss``'s ``MemoryEfficientSoftDiceLoss``, which gets the
    plan's ``batch_dice``), for both values of ``batch_dice``."""
    monkeypatch.setenv(LOSS_ENV, '{"name": "dice"}')
    ours = make_trainer_batch_dice(nnUNetTrainerSegBalance, batch_dice, ignore=True, regions=True)
    theirs = make_trainer_batch_dice(nnUNetTrainer, batch_dice, ignore=True, regions=True)
    ours.enable_deep_supervision = theirs.enable_deep_supervision = False
    dice_term = theirs._build_loss().dc
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 2, *SHAPES[0], generator=g)
    y = torch.rand(2, 3, *SHAPES[0], generator=g) > 0.6
    expected = 1 + dice_term(x, y[:, :-1], loss_mask=~y[:, -1:])
    torch.testing.assert_close(ours._build_loss()(x, y), expected, rtol=1e-5, atol=1e-6)


def loss_modules(loss):
    """The segbalance loss modules inside a trainer's loss (through the wrappers, every scale)."""
    from segbalance.nnunet_losses import RegionTargets, ScaleAwareLoss

    while isinstance(loss, (DeepSupervisionWrapper, RegionTargets)):
        loss = loss.loss
    return list(loss.losses.values()) if isinstance(loss, ScaleAwareLoss) else [loss]


def test_compile_loss_switch_compiles_every_loss_built(results, monkeypatch):
    from segbalance.monai_losses import is_compiled
    from segbalance.trainers.base import COMPILE_ENV

    for name in ("nnUNetTrainerHDDT", "nnUNetTrainerDFLDice", "nnUNetTrainerBoundary"):
        monkeypatch.delenv(COMPILE_ENV, raising=False)
        eager = loss_modules(make_trainer(getattr(trainers, name))._build_loss())
        assert not any(is_compiled(m) for m in eager)
        monkeypatch.setenv(COMPILE_ENV, "1")
        trainer = make_trainer(getattr(trainers, name), ignore=True)
        modules = loss_modules(trainer._build_loss())
        # the spacing-aware losses have one instance per deep-supervision scale, each compiled
        assert len(modules) == (1 if name == "nnUNetTrainerDFLDice" else 4)
        assert all(is_compiled(m) for m in modules)
        assert f"compiled ({COMPILE_ENV})" in Path(trainer.log_file).read_text()
    # instances built later (a shape first seen) are compiled too
    scale_aware = make_trainer(trainers.nnUNetTrainerHDDT)._build_loss().loss
    assert is_compiled(scale_aware.loss_for_shape((6, 6, 6)))
    monkeypatch.setenv(COMPILE_ENV, "maybe")
    with pytest.raises(ValueError, match=COMPILE_ENV):
        make_trainer(trainers.nnUNetTrainerDFL)._build_loss()


def test_compiled_trainer_loss_same_value_and_gradient(results, monkeypatch):
    """``SEGBALANCE_COMPILE_LOSS=1``: the DFL trainer's loss (the one loss that gains on the CPU) gives the
    eager value and gradient (one compilation, ~20 s on the CPU)."""
    from segbalance.trainers.base import COMPILE_ENV

    logits, targets = inputs(ignore_label=3)
    results_ = []
    for flag in ("0", "1"):
        monkeypatch.setenv(COMPILE_ENV, flag)
        trainer = make_trainer(trainers.nnUNetTrainerDFL, ignore=True)
        trainer.enable_deep_supervision = False
        x = logits[0].detach().clone().requires_grad_()
        value = trainer._build_loss()(x, targets[0])
        value.backward()
        results_.append((value.detach(), x.grad))
    torch.testing.assert_close(results_[1][0], results_[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results_[1][1], results_[0][1], rtol=1e-4, atol=1e-7)
