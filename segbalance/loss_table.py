"""``segbalance losses``: every registered loss evaluated on a built-in synthetic 3D batch.

Prints value and forward+backward time per loss, a quick check that the whole library runs on this
machine (CPU or GPU) and an overview of the losses' scales.
"""

from __future__ import annotations

import argparse
import math
import time

# constructor arguments for losses that have no usable defaults
EXAMPLE_KWARGS: dict[str, dict] = {
    "compound": {"terms": {"dfl": 1.0, "dice": 1.0}},
}


def synthetic_batch(
    batch: int = 2, num_classes: int = 3, size: int = 32, dims: int = 3, seed: int = 0, device: str = "cpu"
):
    """A batch of label maps with a large sphere (class 1) and a small one (class ``C−1``), and logits.

    The logits are a noisy, imperfect prediction of the labels (``3·onehot + N(0, 1.5²)``), so losses are
    away from their optimum and have non-trivial gradients. Returns ``(logits, labels)`` with shapes
    ``(B, C, *spatial)`` and ``(B, 1, *spatial)``.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*[torch.arange(size, dtype=torch.float32) for _ in range(dims)], indexing="ij")
    labels = torch.zeros((batch, 1) + (size,) * dims, dtype=torch.long)
    for b in range(batch):
        centre = size / 2 + (torch.rand(dims, generator=g) - 0.5) * size / 4
        r2 = sum((a - c) ** 2 for a, c in zip(axes, centre))
        labels[b, 0][r2 < (size / 3.2) ** 2] = 1
        if num_classes > 2:
            small = centre + size / 5
            r2s = sum((a - c) ** 2 for a, c in zip(axes, small))
            labels[b, 0][r2s < (size / 14) ** 2] = num_classes - 1
    onehot = torch.nn.functional.one_hot(labels[:, 0], num_classes).movedim(-1, 1).float()
    logits = 3.0 * onehot + 1.5 * torch.randn(onehot.shape, generator=g)
    return logits.to(device), labels.to(device)


def evaluate_all(size: int = 32, device: str = "cpu", repeats: int = 3) -> list[dict]:
    """Value and median forward+backward seconds of every registered loss on :func:`synthetic_batch`."""
    import torch

    from segbalance.monai_losses import get, names

    logits, labels = synthetic_batch(size=size, device=device)
    rows = []
    for name in names():
        row: dict = {"loss": name}
        try:
            loss_fn = get(name, **EXAMPLE_KWARGS.get(name, {}))
            times = []
            for _ in range(repeats):
                x = logits.clone().requires_grad_(True)
                t0 = time.perf_counter()
                value = loss_fn(x, labels)
                value.backward()
                if x.is_cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            row.update(value=float(value.detach()), seconds=sorted(times)[len(times) // 2])
        except Exception as exc:  # report, don't hide: the table shows the failure
            row.update(value=math.nan, seconds=math.nan, error=f"{type(exc).__name__}: {exc}")
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'loss':<16}{'value':>12}{'fwd+bwd ms':>12}", "-" * 40]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['loss']:<16}{'ERROR':>12}  {r['error'][:80]}")
        else:
            lines.append(f"{r['loss']:<16}{r['value']:>12.4f}{1000 * r['seconds']:>12.1f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = evaluate_all(size=args.size, device=device)
    print(f"segbalance losses on a synthetic 2×3×{args.size}³ batch ({device})")
    print(format_table(rows))
    return 1 if any("error" in r for r in rows) else 0


def register(subparsers) -> None:
    p = subparsers.add_parser("losses", help="evaluate every registered loss on a synthetic 3D batch")
    p.add_argument("--size", type=int, default=32, help="edge length of the synthetic cube (default 32)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=run)
