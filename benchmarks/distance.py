"""Exact distance transforms and the boundary-family losses against scipy, MONAI and nnU-Net's default loss.

1. EDT of one mask (a CT-like organ ellipsoid; the field inside it and the field of its background, the
   far-reaching one): ours (torch ``brute`` / ``windowed``, the threaded+cropped ``scipy`` path used on
   the CPU), plain ``scipy.ndimage.distance_transform_edt`` and MONAI's
   ``monai.transforms.utils.distance_transform_edt``, on 128³ and 256³ with spacing (2.5, 0.8, 0.8).
2. Forward+backward of ``boundary``, ``hd_dt`` and ``dpce`` (distances computed in the step) against
   nnU-Net's ``DC_and_CE_loss`` and MONAI's ``HausdorffDTLoss`` on the same tensors, interleaved:
   2×3×64³ on the CPU; 2×4×128³ under fp16 autocast on CUDA. The ``hd_dt`` value is checked against
   MONAI's on the same tensors. On CUDA the distance path is also run under
   ``torch.cuda.set_sync_debug_mode`` to count host synchronisations.

    python benchmarks/distance.py                  # CPU: about 3 minutes on 2 cores
    python benchmarks/distance.py --sizes 128      # EDT on 128³ only

Writes ``benchmarks/results/distance-<device>.json`` and regenerates ``docs/benchmarks-distance.md``
from every ``distance-*.json`` present.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, median, peak_memory_bytes, time_interleaved, write_json  # noqa: E402

from segbalance.loss_table import synthetic_batch  # noqa: E402
from segbalance.monai_losses import get  # noqa: E402
from segbalance.monai_losses.distance import (  # noqa: E402
    euclidean_distance_transform,
    signed_distance_map,
    unsigned_distance_map,
)

SPACING = (2.5, 0.8, 0.8)
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks-distance.md"


def organ_mask(n: int, device: torch.device) -> torch.Tensor:
    """An off-centre ellipsoid covering ~10 % of an ``n³`` volume, ``(1, 1, n, n, n)`` bool."""
    ax = torch.linspace(-1, 1, n, device=device)
    z, y, x = torch.meshgrid(ax, ax, ax, indexing="ij")
    return ((((z - 0.1) / 0.45) ** 2 + ((y + 0.15) / 0.55) ** 2 + ((x - 0.2) / 0.5) ** 2) < 1)[None, None]


def edt_callables(mask: torch.Tensor, device: torch.device, n: int) -> dict:
    from monai.transforms.utils import distance_transform_edt as monai_edt
    from scipy import ndimage

    host = mask[0, 0].cpu().numpy()
    fns = {
        "ours-edt-path": lambda: euclidean_distance_transform(mask, SPACING, method="edt"),
        "ours-scipy-path": lambda: euclidean_distance_transform(mask, SPACING, method="scipy"),
        "scipy": lambda: ndimage.distance_transform_edt(host, sampling=SPACING),
        "monai": lambda: monai_edt(mask[0], sampling=list(SPACING)),
    }
    if device.type == "cuda":
        fns = {
            "ours-brute": lambda: euclidean_distance_transform(mask, SPACING, method="brute"),
            "ours-windowed": lambda: euclidean_distance_transform(mask, SPACING, method="windowed"),
            **fns,
        }
    elif n <= 128:  # the O(n⁴) and offset-by-offset torch paths are slow on a CPU: shown for the record
        fns = {"ours-windowed": lambda: euclidean_distance_transform(mask, SPACING, method="windowed"), **fns}
    return fns


def bench_edt(sizes: list[int], device: torch.device, repeats: int) -> list[dict]:
    from scipy import ndimage

    rows = []
    for n in sizes:
        organ = organ_mask(n, device)
        for name, mask in (("organ", organ), ("background", ~organ)):
            host = mask[0, 0].cpu().numpy()
            reference = torch.from_numpy(ndimage.distance_transform_edt(host, sampling=SPACING)).float()
            fns = edt_callables(mask, device, n)
            reps = repeats if n <= 128 else max(1, repeats - 1)
            times = time_interleaved(fns, device, repeats=reps, warmup=0 if n > 128 else 1)
            base = median(times["scipy"])
            for method, ts in times.items():
                out = fns[method]()
                out = torch.as_tensor(out).reshape(reference.shape).float().cpu()
                row = {
                    "size": n,
                    "mask": name,
                    "method": method,
                    "seconds": median(ts),
                    "speedup_vs_scipy": base / median(ts),
                    "max_abs_error_vs_scipy": float((out - reference).abs().max()),
                }
                rows.append(row)
                print(
                    f"{n:>4}³ {name:<11}{method:<17}{1000 * row['seconds']:>10.1f} ms"
                    f"{row['speedup_vs_scipy']:>8.2f}×  err {row['max_abs_error_vs_scipy']:.1e}",
                    flush=True,
                )
    return rows


def nnunet_baseline() -> torch.nn.Module:
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
    def run() -> None:
        x = logits.detach().requires_grad_(True)
        with torch.autocast(logits.device.type, enabled=autocast, dtype=torch.float16):
            value = loss_fn(x, labels)
        value.backward()

    return run


def count_syncs(fn) -> int:
    """Host synchronisations ``fn`` triggers on CUDA (``torch.cuda.set_sync_debug_mode('warn')``)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def bench_losses(device: torch.device, repeats: int) -> list[dict]:
    from monai.losses import HausdorffDTLoss as MonaiHD

    configs = [((2, 3, 64), False)]
    if device.type == "cuda":
        configs.append(((2, 4, 128), True))
    runs = []
    for (b, c, n), autocast in configs:
        logits, labels = synthetic_batch(batch=b, num_classes=c, size=n, dims=3, device=device)
        if autocast:
            logits = logits.half()
        monai_hd = MonaiHD(include_background=False, to_onehot_y=True, softmax=True)
        losses = {
            "nnunet DC_and_CE": nnunet_baseline(),
            "monai HausdorffDTLoss": monai_hd,
            "hd_dt": get("hd_dt"),
            "hd_dt (scipy EDT)": get("hd_dt", distance_method="scipy"),
            "boundary": get("boundary", spacing=SPACING),
            "dpce": get("dpce", spacing=SPACING),
        }
        if device.type == "cuda":
            losses["hd_dt (windowed EDT)"] = get("hd_dt", distance_method="windowed")
        fns = {k: step(v, logits, labels, autocast) for k, v in losses.items()}
        times = time_interleaved(fns, device, repeats=repeats)
        value_ours = float(get("hd_dt")(logits.float(), labels))
        value_monai = float(monai_hd(logits.float(), labels))
        base, monai_t = median(times["nnunet DC_and_CE"]), median(times["monai HausdorffDTLoss"])
        shape = f"{b}×{c}×{n}³"
        print(f"\n{shape} on {device.type}, autocast={autocast}")
        print(f"{'loss':<24}{'ms':>10}{'/ DC_and_CE':>12}{'MONAI HD /':>12}{'MiB':>9}")
        rows = []
        for name, ts in times.items():
            t = median(ts)
            row = {
                "loss": name,
                "seconds": t,
                "ratio_to_dc_and_ce": t / base,
                "monai_hd_over_this": monai_t / t,
                "peak_bytes": peak_memory_bytes(fns[name], device),
            }
            rows.append(row)
            print(
                f"{name:<24}{1000 * t:>10.1f}{row['ratio_to_dc_and_ce']:>12.2f}"
                f"{row['monai_hd_over_this']:>12.2f}{row['peak_bytes'] / 2**20:>9.1f}",
                flush=True,
            )
        run = {
            "shape": [b, c, n, n, n],
            "autocast": autocast,
            "rows": rows,
            "hd_dt_value": value_ours,
            "monai_hd_value": value_monai,
        }
        print(f"hd_dt value {value_ours:.6f}, MONAI HausdorffDTLoss {value_monai:.6f}")
        if device.type == "cuda":
            onehot = torch.nn.functional.one_hot(labels[:, 0].long(), c).movedim(-1, 1).bool()

            def maps(mask=onehot):
                return signed_distance_map(mask, SPACING), unsigned_distance_map(mask, SPACING)

            run["host_syncs_distance_maps"] = count_syncs(maps)
            run["host_syncs_hd_dt_step"] = count_syncs(fns["hd_dt"])
            run["host_syncs_hd_dt_step_check_finite_off"] = count_syncs(
                step(get("hd_dt", check_finite=False), logits, labels, autocast)
            )
            print(
                "host syncs: distance maps {host_syncs_distance_maps}, hd_dt step {host_syncs_hd_dt_step} "
                "(check_finite=False: {host_syncs_hd_dt_step_check_finite_off})".format(**run)
            )
        runs.append(run)
    return runs


def render_doc() -> Path:
    """Rewrite ``docs/benchmarks-distance.md`` from every ``benchmarks/results/distance-*.json``."""
    lines = [
        "# Distance transforms and boundary-family losses: measurements",
        "",
        "Generated by `python benchmarks/distance.py` (do not edit by hand; rerun it). Ratios are measured",
        "side by side in one run (interleaved A B C A B C …); absolute times count only from a GPU run.",
        "EDT: one 3D mask, spacing (2.5, 0.8, 0.8); `organ` = field inside a CT-like ellipsoid, `background`",
        "= field of its complement (distances up to the volume's size). `max err` is against scipy.",
        "",
        'Which EDT runs where (`method="auto"`): on CUDA the torch `brute` path (exact, no host',
        "round trip, no data-dependent shapes); on the CPU the `edt` path: the `edt` package (seung-lab,",
        "anisotropic, float32) per (image, class), cropped to the nonzero bounding box plus one voxel; the",
        "two-sided fields of `hd_dt` and the signed maps take one multi-label `edt` pass per mask (labels",
        "inside/outside) instead of two transforms. `ours-scipy-path` is the same crop with",
        "`scipy.ndimage.distance_transform_edt` in a thread pool (`method=\"scipy\"`, used for float64 and",
        "when `edt` is missing). The torch paths on the CPU (`windowed` shown; `brute`",
        "is O(n⁴)) are slower than scipy except for",
        "noisy masks with short distances, so they are not the CPU default. Peak memory on the CPU counts",
        "torch allocations only (scipy's numpy buffers are not seen by the profiler).",
        "",
    ]
    for path in sorted(RESULTS.glob("distance-*.json")):
        data = json.loads(path.read_text())
        env = data["environment"]
        lines += [
            f"## {env['device']} ({env['device_type']})",
            "",
            f"torch {env['torch']}, MONAI {env['monai']}, nnU-Net {env['nnunetv2']}, scipy {env['scipy']}, "
            f"numpy {env['numpy']}; {env['date']}. Raw figures: `benchmarks/results/{path.name}`.",
            "",
            "| size | mask | method | ms | speed-up vs scipy | max err |",
            "|---|---|---|---:|---:|---:|",
        ]
        for r in data["edt"]:
            lines.append(
                f"| {r['size']}³ | {r['mask']} | {r['method']} | {1000 * r['seconds']:.1f} | "
                f"{r['speedup_vs_scipy']:.2f}× | {r['max_abs_error_vs_scipy']:.1e} |"
            )
        for run in data["losses"]:
            shape = "×".join(str(s) for s in run["shape"][:3]) + f"³, autocast={run['autocast']}"
            lines += [
                "",
                f"Forward+backward, {shape} (distances computed in the step):",
                "",
                "| loss | ms | ÷ nnU-Net DC_and_CE | MONAI HausdorffDTLoss ÷ this | peak MiB |",
                "|---|---:|---:|---:|---:|",
            ]
            for r in run["rows"]:
                lines.append(
                    f"| {r['loss']} | {1000 * r['seconds']:.1f} | {r['ratio_to_dc_and_ce']:.2f} | "
                    f"{r['monai_hd_over_this']:.2f} | {r['peak_bytes'] / 2**20:.1f} |"
                )
            lines += [
                "",
                f"`hd_dt` = {run['hd_dt_value']:.6f}, MONAI `HausdorffDTLoss` = {run['monai_hd_value']:.6f}.",
            ]
            if "host_syncs_distance_maps" in run:
                lines.append(
                    f"Host synchronisations: distance maps {run['host_syncs_distance_maps']}, whole `hd_dt` "
                    f"step {run['host_syncs_hd_dt_step']} "
                    f"({run['host_syncs_hd_dt_step_check_finite_off']} with `check_finite=False`; the rest "
                    "are the shared input checks)."
                )
        lines.append("")
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(lines) + "\n")
    return DOC


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[128, 256], help="EDT cube edges (128 256)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--skip-losses", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    env = environment(device)
    print(f"device: {env['device']}")
    payload = {
        "environment": env,
        "spacing": list(SPACING),
        "edt": bench_edt(args.sizes, device, args.repeats),
    }
    payload["losses"] = [] if args.skip_losses else bench_losses(device, args.repeats)
    path = write_json(f"distance-{device.type}.json", payload)
    print(f"\nwrote {path} and {render_doc()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
