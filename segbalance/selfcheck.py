"""``segbalance selfcheck``: does segbalance work on this machine? Run it first on a new GPU box.

In well under a minute, on ``--device`` (default ``cuda`` when available) with that device's automatic mixed
precision (fp16 autocast + ``GradScaler`` on CUDA, bf16 autocast on the CPU), it checks:

1. **losses** — every registered loss (:func:`segbalance.monai_losses.names`) runs forward and backward
   on a small synthetic 3D batch: finite value, finite gradients, value within ``rtol``/``atol`` of the
   float32 value on the same (rounded) logits. Time of forward+backward against nnU-Net's
   ``DC_and_CE_loss`` on the same tensors, interleaved.
2. **distance** — the exact Euclidean distance transform of :mod:`segbalance.monai_losses.distance` on the
   device (the torch ``brute`` path on CUDA; on the CPU the torch ``brute`` and ``windowed`` algorithms
   on CPU tensors) and the signed distance maps agree with the CPU ``edt`` package.
3. **nnU-Net trainer losses** — a real plans/dataset.json pair is written to a temporary
   ``nnUNet_preprocessed``; every segbalance trainer (:data:`segbalance.trainers.TRAINER_LOSSES`) is found
   by name through nnU-Net's own lookup (``nnUNet_extTrainer``), built on the device with nnU-Net's
   ``get_trainer_from_args`` and its ``_build_loss()`` runs on deep-supervision outputs under autocast.
4. **nnU-Net training steps** — ``nnUNetTrainer``, ``nnUNetTrainerDFL`` and ``nnUNetTrainerBoundary`` are
   ``initialize()``-d and run nnU-Net's ``train_step`` (its own AMP) on random batches of the plan's
   patch size: finite losses, finite parameters that the optimizer changed; step time against
   ``nnUNetTrainer``.

Prints a table, writes a JSON report with ``--json`` (device, versions, every check, the time ratios),
and exits 0 when every check passed, 1 otherwise. Times are of tiny shapes and mean little on their own;
``benchmarks/`` has the real measurements.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["run_selfcheck", "register", "STEP_TRAINERS", "QUICK_LOSSES"]

STEP_TRAINERS = ("nnUNetTrainer", "nnUNetTrainerDFL", "nnUNetTrainerBoundary")
QUICK_LOSSES = ("dfl", "recall", "gdl_boundary", "hd_dt")
DATASET = "Dataset990_SegbalanceSelfcheck"
# AMP value vs float32 value on the same rounded logits: the losses compute in float32 (design §2)
RTOL, ATOL = 1e-3, 1e-4


def _plans(patch: list[int], batch_size: int) -> dict:
    """A 3d_fullres nnU-Net v2 plan for a tiny PlainConvUNet (5 stages, 4 deep-supervision outputs)."""
    from segbalance.trainers.plans import plainconv_plans

    return plainconv_plans(DATASET, patch, batch_size, [8, 16, 32, 32, 32],
                           strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                           spacing=(2.0, 1.0, 1.0), image_shape=[2 * p for p in patch])


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def environment(device) -> dict:
    import torch

    import segbalance

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    return {
        "device": name,
        "device_type": device.type,
        "amp_dtype": str(amp_dtype(device)).replace("torch.", ""),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "monai": _version("monai"),
        "nnunetv2": _version("nnunetv2"),
        "segbalance": segbalance.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def amp_dtype(device):
    import torch

    return torch.float16 if device.type == "cuda" else torch.bfloat16


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved(fns: dict[str, Callable[[], None]], device, repeats: int) -> dict[str, float]:
    """Fastest of ``repeats`` runs of each callable, run A B A B … so that ratios survive a drifting
    machine. On CUDA: wall time after ``synchronize``. On the CPU: the process's CPU time, which other
    processes on a shared machine do not inflate (its wall time does: a 1 ms loss call was seen taking
    400 ms under load), with one torch thread (host EDTs keep their thread pool; all threads count)."""
    import torch

    clock = time.perf_counter if device.type == "cuda" else time.process_time
    threads = torch.get_num_threads()
    if device.type == "cpu":  # idle OpenMP threads spin, and the spinning counts as CPU time
        torch.set_num_threads(1)
    times: dict[str, list[float]] = {k: [] for k in fns}
    try:
        for _ in range(repeats):
            for name, fn in fns.items():
                _sync(device)
                t0 = clock()
                fn()
                _sync(device)
                times[name].append(clock() - t0)
    finally:
        torch.set_num_threads(threads)
    return {k: min(v) for k, v in times.items()}


def _finite(t) -> bool:
    import torch

    return t is not None and bool(torch.isfinite(t).all())


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


class Report:
    """Rows of checks: ``group``, ``name``, ``ok`` (``True``/``False``/``None`` = skipped), ``detail``."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    @contextlib.contextmanager
    def check(self, group: str, name: str) -> Iterator[dict]:
        row = {"group": group, "name": name, "ok": True, "detail": ""}
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield row
        except Exception as exc:  # one failing check must not hide the others
            row["ok"], row["detail"] = False, _error(exc)
        row["seconds"] = round(time.perf_counter() - t0, 4)
        row["cpu_seconds"] = round(time.process_time() - c0, 4)
        self.rows.append(row)

    def skip(self, group: str, name: str, why: str) -> None:
        self.rows.append({"group": group, "name": name, "ok": None, "detail": why})

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["ok"] is False]


# ---------------------------------------------------------------------------------------------- losses


def _dc_and_ce():
    """nnU-Net v2's default loss as ``nnUNetTrainer._build_loss`` configures it (one scale)."""
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    return DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                          weight_ce=1, weight_dice=1, ignore_label=None,
                          dice_class=MemoryEfficientSoftDiceLoss)


def _amp_backward(value, leaf, device) -> tuple[object, float]:
    """Backward as a training step does: through ``GradScaler`` under fp16 (the scale backs off on
    overflow, as in training), plainly otherwise. Returns the unscaled gradient and the last scale."""
    import torch

    if amp_dtype(device) != torch.float16:
        value.backward()
        return leaf.grad, 1.0
    optimizer = torch.optim.SGD([leaf], lr=0.0)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**16, backoff_factor=2.0**-8)
    for attempt in range(3):  # scales 2^16, 2^8, 1
        leaf.grad = None
        scaler.scale(value).backward(retain_graph=attempt < 2)
        scale = scaler.get_scale()
        scaler.unscale_(optimizer)
        if _finite(leaf.grad):
            return leaf.grad, scale
        scaler.step(optimizer)  # skipped: inf found
        scaler.update()
    return leaf.grad, scale


def check_losses(report: Report, device, names: list[str], size: int, repeats: int) -> None:
    import torch

    from segbalance.loss_table import EXAMPLE_KWARGS, synthetic_batch
    from segbalance.monai_losses import get

    dtype = amp_dtype(device)
    logits, labels = synthetic_batch(batch=2, num_classes=3, size=size, dims=3, device=str(device))
    rounded = logits.to(dtype).float()  # what a network under autocast hands the loss, in float32
    try:
        baseline = _dc_and_ce()
    except ImportError:
        baseline = None

    def step(loss_fn) -> Callable[[], None]:
        def run() -> None:
            leaf = rounded.detach().requires_grad_(True)
            with torch.autocast(device_type=device.type, dtype=dtype):
                value = loss_fn(leaf.to(dtype), labels)
            value.backward()

        return run

    for name in names:
        with report.check("loss", name) as row:
            kwargs = EXAMPLE_KWARGS.get(name, {})
            reference = get(name, **kwargs)(rounded, labels)
            loss_fn = get(name, **kwargs)
            leaf = rounded.detach().requires_grad_(True)
            with torch.autocast(device_type=device.type, dtype=dtype):
                value = loss_fn(leaf.to(dtype), labels)
            grad, scale = _amp_backward(value, leaf, device)
            v, ref = float(value.detach()), float(reference.detach())
            row.update(value=v, float32_value=ref, value_dtype=str(value.dtype).replace("torch.", ""))
            problems = []
            if not math.isfinite(v):
                problems.append(f"value {v}")
            if not _finite(grad):
                problems.append("non-finite gradient" if grad is not None else "no gradient")
            elif not bool(grad.abs().sum() > 0):
                problems.append("zero gradient")
            if math.isfinite(v) and abs(v - ref) > ATOL + RTOL * abs(ref):
                problems.append(f"value {v:.6g} vs float32 {ref:.6g}")
            if scale != 1.0 and dtype == torch.float16:
                row["grad_scale"] = scale
            if baseline is not None and not problems:
                t = _interleaved({"loss": step(loss_fn), "base": step(baseline)}, device, repeats)
                row["time_ratio"] = t["loss"] / t["base"]
            row["ok"] = not problems
            row["detail"] = "; ".join(problems) or f"value {v:.4f} (float32 {ref:.4f})"


# -------------------------------------------------------------------------------------------- distance


def _compare_maps(name: str, got, want, tol: float) -> str | None:
    import torch

    got, want = got.detach().cpu().double(), want.detach().cpu().double()
    if got.shape != want.shape:
        return f"{name}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    if not torch.equal(torch.isinf(got), torch.isinf(want)) or bool(torch.isnan(got).any()):
        return f"{name}: inf/nan pattern differs from edt"
    finite = torch.isfinite(want)
    err = float((got[finite] - want[finite]).abs().max()) if bool(finite.any()) else 0.0
    scale = max(1.0, float(want[finite].abs().max())) if bool(finite.any()) else 1.0
    return None if err <= tol * scale else f"{name}: max |Δ| {err:.3g} vs edt (tolerance {tol * scale:.3g})"


def check_distance(report: Report, device, size: int) -> None:
    import torch

    from segbalance.loss_table import synthetic_batch
    from segbalance.monai_losses.distance import euclidean_distance_transform, signed_distance_map

    _, labels = synthetic_batch(batch=2, num_classes=3, size=size, dims=3, seed=1)
    onehot = torch.nn.functional.one_hot(labels[:, 0], 3).movedim(-1, 1)
    # an item without any zero voxel (+inf by convention) and one without foreground
    mask = torch.cat([onehot, torch.ones_like(onehot[:, :1]), torch.zeros_like(onehot[:, :1])], 1)
    spacing = (2.0, 0.8, 0.7)
    reference = euclidean_distance_transform(mask, spacing, method="edt")
    signed_reference = signed_distance_map(onehot, spacing, method="edt")
    methods = ["auto"] if device.type != "cpu" else ["brute", "windowed"]
    for method in methods:
        label = "auto (brute)" if method == "auto" else method
        with report.check("distance", f"EDT {label} on {device.type} vs edt") as row:
            got = euclidean_distance_transform(mask.to(device), spacing, method=method)
            problem = _compare_maps("EDT", got, reference, 1e-5)
            if got.device.type != device.type:
                problem = f"result on {got.device}, expected {device.type}"
            signed = signed_distance_map(onehot.to(device), spacing, method=method)
            problem = problem or _compare_maps("signed map", signed, signed_reference, 1e-5)
            row["ok"], row["detail"] = problem is None, problem or f"{tuple(mask.shape)}, spacing {spacing}"


# -------------------------------------------------------------------------------------------- nnU-Net


@contextlib.contextmanager
def _nnunet_folders(patch: list[int], batch_size: int) -> Iterator[Path]:
    """A temporary ``nnUNet_preprocessed``/``nnUNet_results`` with a real plans.json and dataset.json, the
    segbalance trainers registered in ``nnUNet_extTrainer``; the environment is restored afterwards."""
    from segbalance.trainers import register
    from segbalance.trainers.plans import dataset_json

    keys = ("nnUNet_preprocessed", "nnUNet_results", "nnUNet_compile", "nnUNet_extTrainer")
    saved = {k: os.environ.get(k) for k in keys}
    with tempfile.TemporaryDirectory(prefix="segbalance-selfcheck-") as tmp:
        base = Path(tmp) / "preprocessed" / DATASET
        (base / "nnUNetPlans_3d_fullres").mkdir(parents=True)
        # nnU-Net infers its dataset class from the file endings in the data folder
        (base / "nnUNetPlans_3d_fullres" / "case_0.npz").touch()
        (base / "nnUNetPlans.json").write_text(json.dumps(_plans(patch, batch_size), indent=1))
        (base / "dataset.json").write_text(json.dumps(dataset_json(), indent=1))
        os.environ.update(nnUNet_preprocessed=str(Path(tmp) / "preprocessed"),
                          nnUNet_results=str(Path(tmp) / "results"), nnUNet_compile="false")
        register()
        try:
            yield base
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@functools.cache
def _trainer_class(name: str):
    """The class nnU-Net's ``nnUNetv2_train -tr NAME`` would use (its lookup, ``nnUNet_extTrainer``)."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with contextlib.redirect_stdout(io.StringIO()):
        return recursive_find_trainer_class_by_name(name)


def _trainer(name: str, device, log: io.StringIO):
    """A trainer built as nnU-Net's ``get_trainer_from_args`` builds it: plans and dataset.json from disk."""
    base = Path(os.environ["nnUNet_preprocessed"]) / DATASET
    plans = json.loads((base / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((base / "dataset.json").read_text())
    with contextlib.redirect_stdout(log):
        return _trainer_class(name)(plans=plans, configuration="3d_fullres", fold=0,
                                    dataset_json=dataset_json, device=device)


def _scale_shapes(trainer, patch: list[int]) -> list[list[int]]:
    return [[round(p * s) for p, s in zip(patch, scale)] for scale in trainer._get_deep_supervision_scales()]


def check_trainer_losses(report: Report, device, trainer_names: list[str], patch: list[int]) -> None:
    import torch

    dtype = amp_dtype(device)
    log = io.StringIO()
    for name in trainer_names:
        with report.check("trainer loss", name) as row:
            trainer = _trainer(name, device, log)
            with contextlib.redirect_stdout(log):
                loss = trainer._build_loss()
            g = torch.Generator().manual_seed(0)
            shapes = _scale_shapes(trainer, patch)
            leaves = [torch.randn(2, 3, *s, generator=g).to(device).requires_grad_(True) for s in shapes]
            targets = [torch.randint(0, 3, (2, 1, *s), generator=g).to(device, torch.int16) for s in shapes]
            with torch.autocast(device_type=device.type, dtype=dtype):
                value = loss([x.to(dtype) for x in leaves], targets)
            value.backward()
            problems = []
            if not _finite(value):
                problems.append(f"value {float(value.detach())}")
            if not all(_finite(x.grad) for x in leaves if x.grad is not None) or leaves[0].grad is None:
                problems.append("non-finite or missing gradient")
            row["ok"] = not problems
            row["detail"] = "; ".join(problems) or (f"{type(loss).__name__}, {len(shapes)} scales, "
                                                    f"value {float(value.detach()):.4f}")


def _batch(trainer, patch: list[int], batch_size: int, seed: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    data = torch.randn(batch_size, 1, *patch, generator=g)
    target = torch.zeros(batch_size, 1, *patch)
    target[:, :, 2:-2, 4:-4, 4:-4] = 1  # an organ with a small lesion inside
    target[:, :, patch[0] // 2 - 1:patch[0] // 2 + 1, patch[1] // 2 - 2:patch[1] // 2 + 2,
           patch[2] // 2 - 2:patch[2] // 2 + 2] = 2
    targets = [torch.nn.functional.interpolate(target, size=s, mode="nearest").to(torch.int16)
               for s in _scale_shapes(trainer, patch)]
    return {"data": data, "target": targets}


def check_train_steps(report: Report, device, patch: list[int], batch_size: int, steps: int) -> None:
    import torch

    log = io.StringIO()
    built: dict[str, object] = {}
    for name in STEP_TRAINERS:
        with report.check("train step", name) as row:
            trainer = _trainer(name, device, log)
            with contextlib.redirect_stdout(log):
                trainer.initialize()
                trainer.on_train_epoch_start()
            before = [p.detach().clone() for p in trainer.network.parameters()]
            batch = _batch(trainer, patch, batch_size, 0)
            # under fp16 GradScaler skips the update while its initial scale overflows: allow a few
            skipped = -1
            changed, first = False, math.nan
            while not changed and skipped < 4 and (skipped < 0 or math.isfinite(first)):
                skipped += 1
                with contextlib.redirect_stdout(log):
                    first = float(trainer.train_step(batch)["loss"])
                changed = any(not torch.equal(a, b) for a, b in zip(before, trainer.network.parameters()))
            if skipped and changed:
                row["skipped_updates"] = skipped
            params_finite = all(_finite(p) for p in trainer.network.parameters())
            problems = [] if math.isfinite(first) else [f"loss {first}"]
            if not params_finite:
                problems.append("non-finite parameters after the step")
            if not changed:
                problems.append(f"{skipped + 1} optimizer steps left every parameter unchanged")
            row["first_loss"] = first
            row["amp"] = "fp16 autocast + GradScaler" if device.type == "cuda" else "none (as nnU-Net on CPU)"
            row["ok"] = not problems
            row["detail"] = "; ".join(problems) or f"loss {first:.4f}"
            if row["ok"]:
                built[name] = (trainer, row)
    if "nnUNetTrainer" not in built or len(built) < 2 or steps < 1:
        return
    batches = [_batch(built["nnUNetTrainer"][0], patch, batch_size, seed) for seed in range(1, steps + 1)]
    losses: dict[str, list[float]] = {name: [] for name in built}

    def step_fn(name: str) -> Callable[[], None]:
        trainer = built[name][0]
        it = iter(batches * 2)

        def run() -> None:
            with contextlib.redirect_stdout(log):
                losses[name].append(float(trainer.train_step(next(it))["loss"]))

        return run

    times = _interleaved({name: step_fn(name) for name in built}, device, repeats=steps)
    for name, (_, row) in built.items():
        row["step_seconds"] = times[name]
        row["time_ratio"] = times[name] / times["nnUNetTrainer"]
        if not all(math.isfinite(v) for v in losses[name]):
            row["ok"], row["detail"] = False, f"non-finite loss in steps: {losses[name]}"
        else:
            row["detail"] += f", then {len(losses[name])} steps finite"


# ------------------------------------------------------------------------------------------------ run


def run_selfcheck(device: str | None = None, quick: bool = False, loss_size: int = 24) -> dict:
    """Run every check; returns the JSON report (``passed``, ``environment``, ``checks``)."""
    import torch

    t0 = time.perf_counter()
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:  # torch's own message lists every device type; ours says what selfcheck takes
        raise ValueError(f"--device must be cpu or cuda, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch.cuda.is_available() is False on this machine "
                         f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {device!r}")
    torch.manual_seed(0)
    report = Report()

    from segbalance.monai_losses import names

    loss_names = [n for n in names() if not quick or n in QUICK_LOSSES]
    check_losses(report, dev, loss_names, size=16 if quick else loss_size, repeats=2 if quick else 5)
    check_distance(report, dev, size=16 if quick else 24)

    patch, batch_size = [16, 32, 32], 2
    try:
        import nnunetv2  # noqa: F401
    except ImportError as exc:
        why = f"nnunetv2 is not installed ({exc}); pip install \"segbalance[nnunet]\""
        report.skip("trainer loss", "all", why)
        report.skip("train step", "all", why)
    else:
        try:
            from segbalance.trainers import TRAINER_LOSSES

            trainers = [t for t in TRAINER_LOSSES if not quick or t in STEP_TRAINERS]
        except Exception as exc:  # a broken trainer table fails this check; the step trainers still run
            report.rows.append({"group": "trainer loss", "name": "TRAINER_LOSSES", "ok": False,
                                "detail": _error(exc)})
            trainers = []
        with _nnunet_folders(patch, batch_size):
            check_trainer_losses(report, dev, trainers, patch)
            check_train_steps(report, dev, patch, batch_size, steps=1 if quick else 3)
    for row in report.rows:
        if "time_ratio" in row:
            row["time_ratio"] = round(row["time_ratio"], 3)
    return {
        "passed": not report.failed,
        "failed": [f"{r['group']}: {r['name']}" for r in report.failed],
        "environment": environment(dev),
        "quick": quick,
        "seconds": round(time.perf_counter() - t0, 1),
        "loss_batch": [2, 3, *([16] * 3 if quick else [loss_size] * 3)],
        "tolerance_vs_float32": {"rtol": RTOL, "atol": ATOL},
        "nnunet_patch": [batch_size, 1, *patch],
        "time_ratio_baselines": {"loss": "nnunetv2 DC_and_CE_loss (fwd+bwd, same tensors, same autocast)",
                                 "train step": "nnUNetTrainer.train_step"},
        "timing": ("fastest of the interleaved runs; " + (
            "wall time after torch.cuda.synchronize" if dev.type == "cuda" else
            "process CPU time with one torch thread (robust on a shared machine)")),
        "checks": report.rows,
    }


def format_report(result: dict) -> str:
    env = result["environment"]
    lines = [f"segbalance {env['segbalance']} selfcheck on {env['device']} ({env['device_type']}, autocast "
             f"{env['amp_dtype']}); torch {env['torch']}, monai {env['monai']}, nnunetv2 {env['nnunetv2']}",
             f"{'group':<14}{'check':<28}{'result':<8}{'time×':>7}  detail", "-" * 100]
    for r in result["checks"]:
        status = {True: "ok", False: "FAIL", None: "skip"}[r["ok"]]
        ratio = f"{r['time_ratio']:.2f}" if "time_ratio" in r else ""
        lines.append(f"{r['group']:<14}{r['name']:<28}{status:<8}{ratio:>7}  {r['detail'][:120]}")
    n_fail = len(result["failed"])
    lines.append("-" * 100)
    verdict = "all checks passed" if result["passed"] else f"{n_fail} check(s) FAILED"
    lines.append(f"{verdict} in {result['seconds']:.1f} s. time× = time / nnU-Net's "
                 "(DC_and_CE_loss fwd+bwd; nnUNetTrainer step)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    result = run_selfcheck(args.device, quick=args.quick)
    print(format_report(result))
    if args.json:
        from segbalance.atomic import atomic_write_text

        path = atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
    return 0 if result["passed"] else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "selfcheck", help="check losses, distance transforms and nnU-Net trainers on this device (< 1 min)",
        description="Check, in under a minute, that every loss, the distance transforms and the nnU-Net "
                    "trainers work on this device with its mixed precision (fp16 on CUDA, bf16 on the CPU). "
                    "Exit code 0 when all checks pass, 1 otherwise. Run it first on a new GPU machine.",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON to PATH")
    p.add_argument("--quick", action="store_true",
                   help=f"a subset: losses {', '.join(QUICK_LOSSES)}, the three step trainers, one step")
    p.set_defaults(func=run)

