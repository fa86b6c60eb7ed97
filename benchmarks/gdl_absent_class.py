"""What GDL's weights do with a class absent from an image (2D slice or nnU-Net-style 3D patch).

Sudre's Generalized Dice weighs class ``c`` by ``w_c = 1/(Σ_v g_c)²`` per image (``batch=False``) or per
batch (``batch=True``). A class absent from the image has ``w_c = ∞``; MONAI (and segbalance's default
``absent_weight="max"``) replace it by the largest finite weight of that image, i.e. the weight of the
rarest *present* class, ``"zero"`` drops the class. This script measures, on the phantoms of
``benchmarks/compare_losses.py`` (no training):

1. how often the lesion is absent from a training item: the demo's 2D foreground slices, and 3D patches
   drawn as nnU-Net draws them (batch 2, the second patch forced onto a voxel of a foreground class chosen
   uniformly among those present, the first anywhere);
2. the gradient of each loss variant on the *lesion logit* at the state the 2D GDL runs end in: organ and
   background right, lesion voxels predicted as organ, lesion probability ``eps`` everywhere. ``up`` is the
   push towards the lesion at lesion voxels (``−Σ ∂L/∂x_lesion`` there), ``down`` the push away from it at
   all other voxels, split into images with and without the lesion. ``up/down < 1`` means that a shared
   direction (the lesion channel's bias, features the lesion shares with the organ) is pushed down: the
   lesion channel collapses further.

    python benchmarks/gdl_absent_class.py   # ~20 min on 2 busy cores; writes results/gdl_absent_class.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name: (registered loss, kwargs)
    "gdl (default: per image, absent=max)": ("gdl", {}),
    "gdl absent_weight=zero": ("gdl", {"absent_weight": "zero"}),
    "gdl batch=True": ("gdl", {"batch": True}),
    "gdl batch=True absent_weight=zero": ("gdl", {"batch": True, "absent_weight": "zero"}),
    "dice (per image)": ("dice", {}),
    "dice batch=True": ("dice", {"batch": True}),
    "nnU-Net Dice (batch, no bg, smooth 1e-5)": ("dice", {"batch": True, "include_background": False}),
    "ce": ("ce", {}),
}


def phantoms(n: int, shape: tuple[int, int, int], seed: int) -> list[np.ndarray]:
    """Label maps of ``write_phantom_dataset(root, n, seed=seed, shape=shape)`` (case ``i``: seed + i)."""
    from segbalance.synthetic import make_phantom

    return [make_phantom(shape=shape, seed=seed + i).label.astype(np.int64) for i in range(n)]


def slices_2d(labels: list[np.ndarray]) -> list[np.ndarray]:
    """The demo's 2D training items: axial slices with any foreground (``foreground_slices=True``)."""
    return [sl for lab in labels for sl in lab if sl.any()]


def nnunet_batches(labels: list[np.ndarray], patch: tuple[int, ...], n_batches: int, rng) -> list[np.ndarray]:
    """nnU-Net's sampling: batch 2, oversample_foreground_percent 0.33 (the 2nd patch forced onto a voxel of
    a foreground class drawn uniformly among the classes present, patch centred on it, clipped to the
    image), the 1st patch uniform. Returns ``(2, *patch)`` label batches."""
    shape = np.array(labels[0].shape)
    p = np.array(patch)
    locs = [{c: np.argwhere(lab == c) for c in (1, 2) if (lab == c).any()} for lab in labels]
    out = []
    for _ in range(n_batches):
        items = []
        for forced in (False, True):
            k = rng.integers(len(labels))
            if forced:
                cls = list(locs[k])[rng.integers(len(locs[k]))]
                centre = locs[k][cls][rng.integers(len(locs[k][cls]))]
                lo = np.clip(centre - p // 2, 0, shape - p)
            else:
                lo = np.array([rng.integers(0, s - q + 1) for s, q in zip(shape, p)])
            sl = tuple(slice(a, a + q) for a, q in zip(lo, p))
            items.append(labels[k][sl])
        out.append(np.stack(items))
    return out


def absent_stats(items: list[np.ndarray], batches: list[np.ndarray] | None = None) -> dict:
    has = np.array([(it == 2).any() for it in items])
    les = np.array([(it == 2).sum() for it in items if (it == 2).any()])
    org = np.array([(it == 1).sum() for it in items])
    out = {
        "items": len(items),
        "share_without_lesion": float(1 - has.mean()),
        "share_without_organ": float(np.mean(org == 0)),
        "lesion_voxels_when_present_median": float(np.median(les)) if les.size else 0.0,
        "organ_voxels_median": float(np.median(org)),
        "voxels_per_item": int(items[0].size),
    }
    if batches is not None:
        out["share_of_batches_without_lesion"] = float(np.mean([not (b == 2).any() for b in batches]))
    return out


def weights_when_absent(items: list[np.ndarray]) -> dict:
    """Per image, ``absent_weight="max"``: the lesion's weight when absent, relative to its weight when
    present (median over images with / without it): how much one lesion false-positive voxel in a
    lesion-free image weighs against one lesion voxel in an image that has it (within each image's ratio)."""
    import torch

    from segbalance.monai_losses.dice import _gdl_weights

    g = torch.stack([torch.bincount(torch.as_tensor(it).reshape(-1), minlength=3) for it in items]).float()
    w = _gdl_weights(g, "max")
    has = g[:, 2] > 0
    rel = (w[:, 2] / w.sum(-1)).numpy()  # the lesion's share of the image's total weight
    has = has.numpy()
    absent_max_is = np.where(g[~has][:, 1].numpy() > 0, "organ", "bg")
    return {
        "lesion_weight_share_when_present_median": float(np.median(rel[has])) if has.any() else None,
        "lesion_weight_share_when_absent_median": float(np.median(rel[~has])) if (~has).any() else None,
        "absent_lesion_takes_weight_of": {k: int((absent_max_is == k).sum()) for k in ("organ", "bg")},
    }


def never_lesion_logits(lab, eps: float, margin: float = 6.0):
    """Logits of a model that gets background/organ right, calls the lesion organ, and gives the lesion
    probability ~``eps`` everywhere."""
    import torch

    lab = torch.as_tensor(lab)
    bo = torch.where(lab == 2, torch.ones_like(lab), lab)  # lesion predicted as organ
    logits = torch.zeros((lab.shape[0], 3, *lab.shape[1:]))
    logits[:, :2] = margin * torch.nn.functional.one_hot(bo, 2).movedim(-1, 1).float()
    logits[:, 2] = margin + float(np.log(eps / (1 - eps)))  # softmax(lesion) ~ eps next to the winner
    return logits


def lesion_gradients(batches: list[np.ndarray], eps: float) -> dict:
    """Per variant: up (towards the lesion, at lesion voxels), down in images with / without the lesion,
    summed over the batches and divided by the number of batches."""
    import torch

    from segbalance.monai_losses import get

    res = {}
    for name, (loss, kwargs) in VARIANTS.items():
        fn = get(loss, **kwargs)
        up = down_with = down_without = 0.0
        for b in batches:
            x = never_lesion_logits(b, eps).requires_grad_(True)
            y = torch.as_tensor(b)[:, None]
            fn(x, y).backward()
            gl = x.grad[:, 2]
            les = torch.as_tensor(b) == 2
            has = les.flatten(1).any(1)
            up += float(-gl[les].sum())
            down_with += float(gl[has][~les[has]].sum())
            down_without += float(gl[~has].sum())
        n = len(batches)
        up, down_with, down_without = up / n, down_with / n, down_without / n
        down = down_with + down_without
        res[name] = {
            "up": up,
            "down_in_images_with_lesion": down_with,
            "down_in_images_without_lesion": down_without,
            "up_over_down": up / down if down > 0 else float("inf"),
            "share_of_down_from_lesion_free_images": down_without / down if down > 0 else 0.0,
        }
    return res


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="phantom seed (compare_losses' seed 0: cases 0..n-1)")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.001, 0.01, 0.1])
    ap.add_argument("--shape-3d", type=int, nargs=3, default=[48, 128, 128])
    ap.add_argument("--patch-3d", type=int, nargs=3, default=[16, 48, 48], help="the demo's 3D patch")
    ap.add_argument("--batches", type=int, default=100, help="batches drawn (2D: 8 slices, 3D: 2 patches)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "gdl_absent_class.json"))
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()

    # 2D: the demo-budget training set of compare_losses' seed (10 phantoms 32x80x80), batches of 8 slices
    sl = slices_2d(phantoms(10, (32, 80, 80), args.seed))
    b2 = [np.stack([sl[i] for i in rng.choice(len(sl), 8, replace=False)]) for _ in range(args.batches)]
    # 3D: larger phantoms, nnU-Net-style patch batches
    vols = phantoms(10, tuple(args.shape_3d), args.seed)
    b3 = nnunet_batches(vols, tuple(args.patch_3d), args.batches, rng)
    p3 = [it for b in b3 for it in b]
    out = {
        "info": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "seed": args.seed,
            "batches": args.batches,
            "2d": {"phantoms": 10, "shape": [32, 80, 80], "batch": 8},
            "3d": {"phantoms": 10, "shape": args.shape_3d, "patch": args.patch_3d, "batch": 2,
                   "sampling": "nnU-Net: 1st patch uniform, 2nd forced onto a foreground class voxel"},
            "command": " ".join(["python", *sys.argv]),
        },
        "2d": {"absent": absent_stats(sl, b2), "weights": weights_when_absent(sl), "gradients": {}},
        "3d": {"absent": absent_stats(p3, b3), "weights": weights_when_absent(p3), "gradients": {}},
    }
    for i, kind in enumerate(("uniform", "forced")):
        out["3d"]["absent"][f"share_without_lesion_{kind}_patches"] = float(
            np.mean([not (b[i] == 2).any() for b in b3])
        )
    for eps in args.eps:
        out["2d"]["gradients"][str(eps)] = lesion_gradients(b2, eps)
        out["3d"]["gradients"][str(eps)] = lesion_gradients(b3, eps)
    out["info"]["wall_s"] = round(time.time() - t0, 1)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    for dim in ("2d", "3d"):
        print(dim, json.dumps(out[dim]["absent"]), json.dumps(out[dim]["weights"]))
        for eps, res in out[dim]["gradients"].items():
            for name, r in res.items():
                print(f"  eps={eps:<5} {name:<44} up/down={r['up_over_down']:8.3f} "
                      f"up={r['up']:.3g} down(with)={r['down_in_images_with_lesion']:.3g} "
                      f"down(without)={r['down_in_images_without_lesion']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
