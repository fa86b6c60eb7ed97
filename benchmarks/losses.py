"""Forward+backward time and peak memory of every registered loss against nnU-Net's ``DC_and_CE_loss``.

Each loss and the baseline run on the same tensors, interleaved (A B A B …) so the ratios hold when the
machine's speed drifts. CPU default: logits 2×3×64³; on CUDA also 2×4×128³ under fp16 autocast.

    python benchmarks/losses.py                 # all losses, CPU or CUDA as available
    python benchmarks/losses.py --only dfl dice # a subset (written to losses-<device>-subset.json)

Writes ``benchmarks/results/losses-<device>.json`` and prints a table of ratios.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, median, peak_memory_bytes, time_interleaved, write_json  # noqa: E402

from segbalance.loss_table import EXAMPLE_KWARGS, synthetic_batch  # noqa: E402
from segbalance.monai_losses import get, names  # noqa: E402


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", default=[], help="loss names (default: all registered)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
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
