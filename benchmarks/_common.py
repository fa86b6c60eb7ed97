"""Shared helpers of the benchmark scripts: environment record, side-by-side timing, peak memory."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def device_name(device: torch.device) -> str:
    """Human-readable name of the machine the benchmark ran on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def environment(device: torch.device) -> dict:
    """Device and library versions recorded in every benchmark JSON."""
    import monai
    import numpy
    import scipy

    try:
        from importlib.metadata import version

        nnunet_version = version("nnunetv2")
    except Exception:  # pragma: no cover - nnunetv2 missing
        nnunet_version = None
    return {
        "device": device_name(device),
        "device_type": device.type,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "nnunetv2": nnunet_version,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], None]], device: torch.device, repeats: int = 5, warmup: int = 1
) -> dict[str, list[float]]:
    """Run each callable in turn, A B C A B C …, and return every run's wall time in seconds.

    Interleaving makes ratios robust to the machine's speed drifting during the run.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def peak_memory_bytes(fn: Callable[[], None], device: torch.device) -> int:
    """Peak extra memory allocated by ``fn``: CUDA allocator stats, or the CPU profiler's allocations."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    live = peak = 0
    for event in events:  # self (exclusive) allocations and frees in time order
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path
