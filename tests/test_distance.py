"""Exact distance transforms (torch and scipy paths) against scipy, signed maps, the MONAI transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from segbalance.monai_losses.distance import (
    euclidean_distance_transform,
    signed_distance_map,
    unsigned_distance_map,
)
from segbalance.monai_losses.distance_inputs import unsigned_from_signed

METHODS = ["brute", "windowed", "scipy"]


def scipy_edt(mask: torch.Tensor, spacing, spatial_dims: int) -> np.ndarray:
    arr = mask.numpy()
    items = arr.reshape((-1,) + arr.shape[arr.ndim - spatial_dims :])
    return np.stack([ndimage.distance_transform_edt(x, sampling=spacing) for x in items]).reshape(arr.shape)


def livia_signed(pos: np.ndarray, spacing) -> np.ndarray:
    """LIVIAETS ``one_hot2dist`` for one mask, with the inside offset ``min(spacing)`` (1 at unit spacing)."""
    if not pos.any() or pos.all():
        return np.zeros(pos.shape)
    neg = ~pos
    outside = ndimage.distance_transform_edt(neg, sampling=spacing) * neg
    inside = (ndimage.distance_transform_edt(pos, sampling=spacing) - min(spacing)) * pos
    return outside - inside


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "shape, spacing, density",
    [
        ((2, 3, 19, 23), (0.7, 1.9), 0.6),
        ((2, 2, 9, 14, 11), (2.5, 0.8, 0.8), 0.9),
        ((1, 2, 12, 10, 9), 1.0, 0.99),
    ],
    ids=["2d", "3d-aniso", "3d-sparse-zeros"],
)
def test_edt_equals_scipy(method, dtype, shape, spacing, density):
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(shape, generator=g) < density
    mask[0, 0] = False  # all zero: distances 0
    nd = len(shape) - 2
    out = euclidean_distance_transform(mask, spacing, spatial_dims=nd, method=method, dtype=dtype)
    assert out.dtype == dtype and out.shape == mask.shape
    ref = torch.from_numpy(scipy_edt(mask, spacing, nd)).to(dtype)
    s_min = spacing if isinstance(spacing, float) else min(spacing)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4 * s_min)


@pytest.mark.parametrize("method", METHODS)
def test_edt_item_without_zero_is_inf_and_others_unaffected(method):
    mask = torch.ones(3, 1, 6, 7, dtype=torch.bool)
    mask[1, 0, 2, 3] = False
    out = euclidean_distance_transform(mask, (1.5, 1.0), method=method)
    assert torch.isinf(out[0]).all() and torch.isinf(out[2]).all()
    torch.testing.assert_close(out[1], torch.from_numpy(scipy_edt(mask[1:2], (1.5, 1.0), 2)[0]).float())


def test_edt_docstring_semantics_1d_and_spatial_dims_from_spacing():
    mask = torch.tensor([0, 1, 1, 1, 0, 1])
    out = euclidean_distance_transform(mask, [0.5])  # one spatial axis, inferred from the spacing
    assert out.tolist() == [0.0, 0.5, 1.0, 0.5, 0.0, 0.5]


def test_edt_bad_arguments_name_them():
    mask = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="spacing"):
        euclidean_distance_transform(mask, (1.0,) * 5)  # more spatial axes than the mask has
    with pytest.raises(ValueError, match="spacing"):
        euclidean_distance_transform(mask, (1.0, -2.0))
    with pytest.raises(ValueError, match="method"):
        euclidean_distance_transform(mask, method="fast")
    with pytest.raises(ValueError, match="dtype"):
        euclidean_distance_transform(mask, dtype=torch.float16)
    with pytest.raises(ValueError, match="mask"):
        euclidean_distance_transform(mask.numpy())


def sphere(shape, spacing, radius):
    axes = [(torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    grids = torch.meshgrid(*axes, indexing="ij")
    r = torch.sqrt(sum(g**2 for g in grids))
    return r < radius, r


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8)])
def test_signed_map_of_a_sphere_is_the_analytic_distance_within_a_voxel(spacing):
    shape = (16, 40, 40) if spacing[0] > 1 else (32, 32, 32)
    radius = 10.0
    inside, r = sphere(shape, spacing, radius)
    phi = signed_distance_map(inside[None, None], spacing, dtype=torch.float64)[0, 0]
    analytic = r - radius  # negative inside
    # φ measures voxel-centre to voxel-centre distances with an offset at the inner boundary: within a
    # voxel step (the coarsest axis) of the distance to the continuous surface
    assert (phi - analytic).abs().max() <= max(spacing)
    assert (phi[inside] <= 0).all() and (phi[~inside] > 0).all()
    # one-sided bounds that hold exactly: an inside voxel centre lies inside the ball, so outside voxels
    # are at least |v − c| − r from it; likewise inside voxels are at least r − |v − c| from the outside
    assert (phi[~inside] >= analytic[~inside] - 1e-9).all()
    assert (phi[inside] <= analytic[inside] + min(spacing) + 1e-9).all()


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 0.8), (2.0, 3.0)])
def test_signed_map_is_liviaets_convention(spacing):
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 3, (2, 1, 15, 17), generator=g)
    labels[1] = 0  # classes 1 and 2 absent from image 1, class 0 fills it
    onehot = torch.nn.functional.one_hot(labels[:, 0], 3).movedim(-1, 1)
    phi = signed_distance_map(onehot, spacing)
    for b in range(2):
        for c in range(3):
            ref = livia_signed(onehot[b, c].numpy().astype(bool), spacing)
            torch.testing.assert_close(phi[b, c], torch.from_numpy(ref).float(), rtol=0, atol=1e-5)
    assert (phi[1] == 0).all()


def test_signed_map_inner_boundary_is_zero_and_inside_never_positive_with_submm_spacing():
    mask = torch.zeros(1, 1, 9, 9, dtype=torch.bool)
    mask[0, 0, 2:7, 2:7] = True
    phi = signed_distance_map(mask, (0.8, 0.8))[0, 0]
    assert phi[2, 4] == 0 and phi[4, 2] == 0  # inner boundary
    assert phi[4, 4] == pytest.approx(-(3 * 0.8 - 0.8))  # centre: 3 steps to the outside
    assert phi[1, 4] == pytest.approx(0.8) and phi[0, 4] == pytest.approx(1.6)
    assert (phi[mask[0, 0]] <= 0).all()


def test_unsigned_map_is_monai_field_and_recoverable_from_signed_map():
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(2, 2, 8, 9, 7, generator=g) > 0.7
    mask[1, 1] = True  # full: no boundary
    spacing = (2.0, 0.5, 1.0)
    field = unsigned_distance_map(mask, spacing)
    for b in range(2):
        for c in range(2):
            m = mask[b, c].numpy()
            if m.all():
                ref = np.zeros(m.shape)
            else:
                ref = ndimage.distance_transform_edt(m, sampling=spacing) + ndimage.distance_transform_edt(
                    ~m, sampling=spacing
                )
            torch.testing.assert_close(field[b, c], torch.from_numpy(ref).float(), rtol=0, atol=1e-5)
    recovered = unsigned_from_signed(signed_distance_map(mask, spacing), mask, spacing)
    torch.testing.assert_close(recovered, field, rtol=0, atol=1e-5)


def test_maps_of_empty_and_full_masks_are_zero_not_inf():
    mask = torch.zeros(1, 2, 5, 6)
    mask[:, 1] = 1
    for fn in (signed_distance_map, unsigned_distance_map):
        out = fn(mask)
        assert torch.isfinite(out).all() and (out == 0).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_brute_path_is_exact_and_never_syncs_with_the_host():
    g = torch.Generator().manual_seed(4)
    mask = torch.rand(2, 3, 24, 20, 22, generator=g) > 0.95
    spacing = (2.5, 0.8, 0.8)
    ref = torch.from_numpy(scipy_edt(mask, spacing, 3)).float()
    cuda_mask = mask.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = euclidean_distance_transform(cuda_mask, spacing)
        phi = signed_distance_map(cuda_mask, spacing)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.testing.assert_close(out.cpu(), ref, rtol=0, atol=1e-4)
    torch.testing.assert_close(
        phi.cpu(), signed_distance_map(mask, spacing, method="scipy"), rtol=0, atol=1e-4
    )


# --- the MONAI transform -------------------------------------------------------------------------


def test_transform_in_compose_uses_metatensor_spacing():
    from monai.data import MetaTensor
    from monai.transforms import Compose

    from segbalance.preprocessing.transforms import SignedDistanceMapd

    g = torch.Generator().manual_seed(5)
    label = torch.randint(0, 3, (1, 10, 12, 8), generator=g)
    affine = torch.tensor(
        [[0.0, 0.0, 2.5, 10.0], [0.0, -0.8, 0.0, 5.0], [0.7, 0.0, 0.0, -3.0], [0.0, 0.0, 0.0, 1.0]]
    )  # axes permuted and flipped: the spacing per array axis is (0.7, 0.8, 2.5)
    item = {"image": torch.rand(1, 10, 12, 8), "label": MetaTensor(label, affine=affine)}
    out = Compose([SignedDistanceMapd(keys="label", num_classes=3)])(item)
    onehot = torch.nn.functional.one_hot(label[0], 3).movedim(-1, 0)
    expected = signed_distance_map(onehot[None], (0.7, 0.8, 2.5))[0]
    assert isinstance(out["dist"], MetaTensor) and out["dist"].dtype == torch.float32
    torch.testing.assert_close(out["dist"].as_tensor(), expected)
    torch.testing.assert_close(out["dist"].affine, out["label"].affine)
    assert torch.equal(out["label"].as_tensor(), label)  # the input is not modified
    # an explicit spacing wins over the metadata
    iso = SignedDistanceMapd("label", num_classes=3, spacing=1.0)(item)["dist"]
    torch.testing.assert_close(iso.as_tensor(), signed_distance_map(onehot[None], 1.0)[0])


def test_transform_one_hot_input_and_errors():
    from segbalance.preprocessing.transforms import SignedDistanceMapd

    mask = np.zeros((1, 6, 6), dtype=np.uint8)
    mask[0, 2:4, 1:5] = 1
    binary = SignedDistanceMapd("label", num_classes=1, output_key="phi")({"label": mask})["phi"]
    torch.testing.assert_close(
        binary[0], torch.from_numpy(livia_signed(mask[0].astype(bool), (1, 1))).float()
    )
    with pytest.raises(ValueError, match="num_classes"):
        SignedDistanceMapd("label")({"label": mask})
    with pytest.raises(ValueError, match="label values"):
        SignedDistanceMapd("label", num_classes=2)({"label": mask * 3})
    with pytest.raises(ValueError, match="output_key"):
        SignedDistanceMapd(["label", "other"], output_key="dist")


# --- real CT/MR lesion masks ---------------------------------------------------------------------

REAL = Path(__file__).resolve().parent / "data" / "real"  # cropped real cases (tests/data/real/README.md)


@pytest.mark.parametrize("case", ["breast1", "brain1"])
def test_signed_maps_of_real_lesion_masks_with_their_spacing(case):
    sitk = pytest.importorskip("SimpleITK")
    image = sitk.ReadImage(str(REAL / f"{case}_label.nrrd"))
    mask = sitk.GetArrayFromImage(image) > 0  # (z, y, x)
    spacing = tuple(reversed(image.GetSpacing()))  # ITK (x, y, z) → array order (z, y, x)
    phi = signed_distance_map(torch.from_numpy(mask)[None, None], spacing, dtype=torch.float64)[0, 0]
    expected = torch.from_numpy(livia_signed(mask, spacing))
    torch.testing.assert_close(phi, expected, rtol=0, atol=1e-9)
    assert (phi[torch.from_numpy(mask)] <= 0).all() and phi.max() > 10 * max(spacing)
