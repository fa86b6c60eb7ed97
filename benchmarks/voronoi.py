"""Voronoi regions of the ground-truth components (CC-DiceCE's maps): one ``edt`` per component against
scipy's feature transform (one ``distance_transform_edt(..., return_indices=True)`` for all components).

The maps are made in nnU-Net's data loader for every training patch, so their cost is paid per iteration
(docs/benchmarks.md, "Instance losses"). Patches: random crops of the ``mixed`` phantoms of
``benchmarks/compare_nnunet.py`` (one large lesion beside five small ones in an organ, spacing 2.5 × 0.8 ×
0.8 mm, ``segbalance.synthetic``) at the ``cpulong`` patch (24×64×64) and at a GPU-sized patch (64×160×160),
plus synthetic patches with 2, 8 and 16 ball lesions; each method timed interleaved (A B A B) on the same
patches, one thread; the regions of both compared (they differ only at voxels equidistant from two
components, to float32 rounding: checked).

    python benchmarks/voronoi.py --repeats 5      # → benchmarks/results/voronoi-cpu.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, median, write_json  # noqa: E402


def regions_edt_loop(ids: np.ndarray, n: int, spacing: tuple[float, ...]) -> np.ndarray:
    """The rule before: one squared ``edt`` per component, the nearest kept (ties: the lower id)."""
    import edt

    best = np.full(ids.shape, np.inf, dtype=np.float32)
    region = np.zeros(ids.shape, dtype=np.int32)
    for j in range(1, n + 1):
        d = edt.edtsq(np.ascontiguousarray(ids != j), anisotropy=spacing, parallel=1)
        closer = d < best
        best[closer] = d[closer]
        region[closer] = j
    return region


def component_distances_sq(ids: np.ndarray, n: int, spacing) -> np.ndarray:
    """``(n, *shape)`` squared distance of every voxel to each component (for the tie check)."""
    import edt

    return np.stack([edt.edtsq(np.ascontiguousarray(ids != j), anisotropy=spacing, parallel=1)
                     for j in range(1, n + 1)])


def phantom_patches(shape: tuple[int, int, int], count: int, seed: int) -> list[np.ndarray]:
    """Random crops of ``shape`` holding at least two lesion components, of ``mixed`` phantoms (the
    comparison's lesion radii and spacing) at least as large as the comparison's."""
    from compare_nnunet import LESION_SETTINGS_BY_NAME, N_LESIONS, SHAPE, SPACING

    from segbalance import synthetic
    from segbalance.monai_losses.instance_maps import component_ids

    size = tuple(max(a, b) for a, b in zip(SHAPE, shape))
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    case = 0
    while len(out) < count:
        label = synthetic.make_phantom(shape=size, spacing=SPACING, seed=case, n_lesions=N_LESIONS,
                                       lesion_radii_mm=LESION_SETTINGS_BY_NAME["mixed"]).label
        case += 1
        for _ in range(20):
            start = [int(rng.integers(0, s - p + 1)) for s, p in zip(label.shape, shape)]
            crop = label[tuple(slice(a, a + p) for a, p in zip(start, shape))]
            if component_ids(crop == 2)[1] >= 2:
                out.append(crop == 2)
                break
    return out


def ball_patches(shape: tuple[int, int, int], n: int, count: int, seed: int) -> list[np.ndarray]:
    """``count`` patches with ``n`` separate balls (radius 2–4 voxels) at random places."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    out = []
    for _ in range(count):
        mask = np.zeros(shape, bool)
        for _ in range(n):
            centre = [rng.integers(4, s - 4) for s in shape]
            r = rng.uniform(2, 4)
            mask |= sum((g - c) ** 2 for g, c in zip(grid, centre)) <= r * r
        out.append(mask)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--patches", type=int, default=8)
    ap.add_argument("--json", default="voronoi-cpu.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from segbalance.monai_losses.instance_maps import component_ids, voronoi_regions

    spacing = (2.5, 0.8, 0.8)
    settings = {
        "mixed phantoms, cpulong patch 24x64x64": phantom_patches((24, 64, 64), args.patches, 0),
        "mixed phantoms, GPU patch 64x160x160": phantom_patches((64, 160, 160), max(2, args.patches // 4), 1),
        "2 balls, 24x64x64": ball_patches((24, 64, 64), 2, args.patches, 2),
        "8 balls, 24x64x64": ball_patches((24, 64, 64), 8, args.patches, 3),
        "16 balls, 64x160x160": ball_patches((64, 160, 160), 16, max(2, args.patches // 4), 4),
    }
    rows = []
    for name, masks in settings.items():
        labelled = [component_ids(m) for m in masks]
        times: dict[str, list[float]] = {"edt_loop": [], "feature_transform": []}
        fns = {"edt_loop": regions_edt_loop, "feature_transform": voronoi_regions}
        for rep in range(args.repeats + 1):  # the first round warms up
            for key, fn in fns.items():
                t0 = time.perf_counter()
                for ids, n in labelled:
                    fn(ids, n, spacing)
                if rep:
                    times[key].append((time.perf_counter() - t0) / len(labelled))
        differ = ties = 0
        for ids, n in labelled:
            a, b = regions_edt_loop(ids, n, spacing), voronoi_regions(ids, n, spacing)
            mask = a != b
            differ += int(mask.sum())
            dist = component_distances_sq(ids, n, spacing)
            best = dist.min(0)
            da, db = (np.take_along_axis(dist, (r - 1)[None].astype(np.int64), 0)[0] for r in (a, b))
            # a differing voxel is a tie: both assigned components are nearest (float32 edt: 1e-5 relative)
            ties += int((np.isclose(da[mask], best[mask], rtol=1e-5) & np.isclose(db[mask], best[mask],
                                                                                   rtol=1e-5)).sum())
        loop, feat = median(times["edt_loop"]), median(times["feature_transform"])
        comps = [n for _, n in labelled]
        rows.append({"setting": name, "patches": len(masks), "components_per_patch": [min(comps), max(comps)],
                     "edt_loop_ms": 1000 * loop, "feature_transform_ms": 1000 * feat,
                     "feature_transform_over_edt_loop": feat / loop, "voxels_differing": differ,
                     "of_which_ties": ties, "times_s": times})
        print(f"{name:42s} comps {min(comps)}-{max(comps)}: edt loop {1000 * loop:8.1f} ms, feature "
              f"transform {1000 * feat:8.1f} ms per patch ({feat / loop:.2f}x); {differ} voxels differ, "
              f"{ties} of them ties", flush=True)
    payload = {"environment": environment(torch.device("cpu")), "spacing_zyx_mm": spacing,
               "load_average": os.getloadavg(), "rows": rows}
    print(f"wrote {write_json(args.json, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
