"""Forward+backward time and peak memory of every registered loss against nnU-Net's ``DC_and_CE_loss``.

Each loss and the baseline run on the same tensors, interleaved (A B A B …) so the ratios hold when the
machine's speed drifts. CPU default: logits 2×3×64³; on CUDA also 2×4×128³ under fp16 autocast.

    python benchmarks/losses.py                 # all losses, CPU or CUDA as available
    python benchmarks/losses.py --only dfl dice # a subset (written to losses-<device>-subset.json)
    python benchmarks/losses.py --compile       # torch.compile against eager (losses-compile-<device>.json)

Writes ``benchmarks/results/losses-<device>.json`` and prints a table of ratios. ``--compile`` times
``compile_loss(loss)`` against the eager loss, interleaved, for ``--only`` (default: dfl, combo, explog,
lovasz, hd_dt) and records, for every registered loss, the graphs and graph breaks that
``torch._dynamo.explain`` finds when the whole module is compiled and when only its math is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, median, peak_memory_bytes, time_interleaved, write_json  # noqa: E402

from segbalance.loss_table import EXAMPLE_KWARGS, synthetic_batch  # noqa: E402
from segbalance.monai_losses import compile_loss, get, names  # noqa: E402
from segbalance.monai_losses.compiling import _CompiledMath  # noqa: E402
from segbalance.monai_losses.inputs import float32_math  # noqa: E402

COMPILE_DEFAULT = ["dfl", "combo", "explog", "lovasz", "hd_dt"]


def nnunet_baseline() -> torch.nn.Module:
    """nnU-Net v2's default loss, configured as ``nnUNetTrainer._build_loss`` does (no deep supervision)."""
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    return DC_and_CE_loss(
        {"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False},
        {},
        weight_ce=1,
        weight_dice=1,
        ignore_label=None,
        dice_class=MemoryEfficientSoftDiceLoss,
    )


def step(loss_fn, logits: torch.Tensor, labels: torch.Tensor, autocast: bool):
    """One forward+backward of ``loss_fn`` as a training step sees it."""

    def run() -> None:
        x = logits.detach().requires_grad_(True)
        with torch.autocast(logits.device.type, enabled=autocast, dtype=torch.float16):
            value = loss_fn(x, labels)
        value.backward()

    return run


def bench(shape: tuple[int, ...], device: torch.device, autocast: bool, only: list[str], repeats: int):
    b, c, size = shape[0], shape[1], shape[2]
    logits, labels = synthetic_batch(batch=b, num_classes=c, size=size, dims=len(shape) - 2, device=device)
    if autocast:
        logits = logits.half()
    baseline = step(nnunet_baseline(), logits, labels, autocast)
    rows = []
    for name in only or names():
        try:
            fn = step(get(name, **EXAMPLE_KWARGS.get(name, {})), logits, labels, autocast)
            times = time_interleaved({"loss": fn, "baseline": baseline}, device, repeats=repeats)
            mem, mem_base = peak_memory_bytes(fn, device), peak_memory_bytes(baseline, device)
        except Exception as exc:  # record and go on: one broken loss must not hide the others
            rows.append({"loss": name, "error": f"{type(exc).__name__}: {exc}"})
            print(f"{name:<16} ERROR {exc}", flush=True)
            continue
        t, t_base = median(times["loss"]), median(times["baseline"])
        row = {
            "loss": name,
            "seconds": t,
            "baseline_seconds": t_base,
            "time_ratio": t / t_base,
            "peak_bytes": mem,
            "baseline_peak_bytes": mem_base,
            "memory_ratio": mem / max(mem_base, 1),
        }
        rows.append(row)
        print(
            f"{name:<16}{1000 * t:>10.1f}{1000 * t_base:>10.1f}{row['time_ratio']:>8.2f}"
            f"{mem / 2**20:>10.1f}{mem_base / 2**20:>10.1f}{row['memory_ratio']:>8.2f}",
            flush=True,
        )
    return rows


def _first_line(reason) -> str:
    lines = [s.strip() for s in str(reason).splitlines() if s.strip()]
    return " / ".join(lines[:2])[:200]


def explain(name: str, logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Graphs and graph breaks of ``torch.compile`` on the whole module and on its math alone."""
    import torch._dynamo

    loss = get(name, **EXAMPLE_KWARGS.get(name, {}))
    out = {}
    with float32_math("cpu"):
        p = loss.prepare(logits, labels)
    targets = {"module": (loss, (logits, labels))}
    if not hasattr(loss, "terms"):  # compound: compile_loss compiles its terms instead
        math = _CompiledMath(loss)._tensors
        targets["math"] = (math, (p.logits, p.onehot, p.labels, p.valid, p.binary, p.activation))
    for what, (fn, args) in targets.items():
        torch._dynamo.reset()
        try:
            e = torch._dynamo.explain(fn)(*args)
            reasons = sorted({_first_line(b.reason) for b in e.break_reasons})
            out[what] = {"graphs": e.graph_count, "breaks": e.graph_break_count, "reasons": reasons}
        except Exception as exc:  # record: explain itself can fail on unsupported code
            out[what] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}
    return out


def bench_compile(shape, device: torch.device, only: list[str], repeats: int) -> dict:
    """Compiled against eager, interleaved; first-call (compile) time; explain for every loss."""
    import time

    b, c, size = shape[0], shape[1], shape[2]
    logits, labels = synthetic_batch(batch=b, num_classes=c, size=size, dims=len(shape) - 2, device=device)
    rows = []
    print(f"{'loss':<16}{'eager ms':>10}{'comp. ms':>10}{'ratio':>8}{'compile s':>11}")
    for name in only or COMPILE_DEFAULT:
        eager_loss = get(name, **EXAMPLE_KWARGS.get(name, {})).to(device)
        compiled = compile_loss(get(name, **EXAMPLE_KWARGS.get(name, {})).to(device))
        eager, comp = step(eager_loss, logits, labels, False), step(compiled, logits, labels, False)
        start = time.perf_counter()
        comp()  # compiles
        first = time.perf_counter() - start
        times = time_interleaved({"eager": eager, "compiled": comp}, device, repeats=repeats)
        te, tc = median(times["eager"]), median(times["compiled"])
        rows.append({"loss": name, "eager_seconds": te, "compiled_seconds": tc, "time_ratio": tc / te,
                     "first_call_seconds": first})  # fmt: skip
        print(f"{name:<16}{1000 * te:>10.1f}{1000 * tc:>10.1f}{tc / te:>8.2f}{first:>11.1f}", flush=True)
    small_logits, small_labels = synthetic_batch(batch=2, num_classes=3, size=12, dims=3)
    graph_info = {}
    for name in names():
        graph_info[name] = explain(name, small_logits, small_labels)
        m = graph_info[name].get("module", {})
        print(f"explain {name:<16} module graphs {m.get('graphs')} breaks {m.get('breaks')}", flush=True)
    return {"shape": list(shape), "rows": rows, "explain": graph_info}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", default=[], help="loss names (default: all registered)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile against eager (see above)")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.compile:
        payload = {"environment": environment(device), "baseline": "the same loss, eager"}
        payload["runs"] = [bench_compile((2, 3, 64, 64, 64), device, args.only, args.repeats)]
        path = write_json(f"losses-compile-{device.type}.json", payload)
        print(f"\nwrote {path}")
        return 0
    configs = [((2, 3, 64, 64, 64), False)]
    if device.type == "cuda":
        configs.append(((2, 4, 128, 128, 128), True))
    payload = {"environment": environment(device), "baseline": "nnunetv2 DC_and_CE_loss", "runs": []}
    for shape, autocast in configs:
        print(f"\n{'×'.join(map(str, shape))} on {payload['environment']['device']} autocast={autocast}")
        print(f"{'loss':<16}{'ms':>10}{'base ms':>10}{'t ratio':>8}{'MiB':>10}{'base MiB':>10}{'m ratio':>8}")
        rows = bench(shape, device, autocast, args.only, args.repeats)
        payload["runs"].append({"shape": list(shape), "autocast": autocast, "rows": rows})
    # a subset never replaces the full table that docs/benchmarks.md quotes
    path = write_json(f"losses-{device.type}{'-subset' if args.only else ''}.json", payload)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
