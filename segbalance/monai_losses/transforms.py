"""MONAI dictionary transform that precomputes the signed distance maps of a label for boundary losses.

Put :class:`SignedDistanceMapd` at the end of a ``monai.transforms.Compose`` (after spatial
augmentation, which would otherwise have to resample the maps) and pass the batch's ``"dist"`` to the
loss: ``loss(logits, batch["label"], dist=batch["dist"])``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from segbalance.monai_losses.distance import METHODS, normalize_spacing, signed_distance_map

__all__ = ["SignedDistanceMapd"]


class SignedDistanceMapd(MapTransform):
    """Add the signed distance maps ``φ_G`` (:func:`~.distance.signed_distance_map`) of ``keys``.

    The label is a channel-first label map ``(1, *spatial)`` (one-hot encoded with ``num_classes``) or
    a one-hot ``(C, *spatial)`` array/tensor. The maps ``(C, *spatial)`` float32 are stored under
    ``output_key`` as a :class:`~monai.data.MetaTensor` carrying the label's metadata. Distances are in
    physical units: the spacing is ``spacing`` when given, else the label's ``pixdim`` (from the
    MetaTensor's affine, in array axis order), else 1.

    Args:
        keys: the label key(s).
        output_key: where to store the maps; with several ``keys``, a sequence of the same length.
        num_classes: number of classes to one-hot a label map; required for ``(1, *spatial)`` labels.
        spacing: override of the voxel spacing (array axis order), or one number.
        method: EDT implementation (:func:`~.distance.euclidean_distance_transform`).
        allow_missing_keys: don't raise when a key is absent.

    Example:
        >>> import torch
        >>> from monai.data import MetaTensor
        >>> affine = torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0]))
        >>> label = MetaTensor(torch.tensor([[[0, 1, 1, 1, 0, 0]]]), affine=affine)
        >>> out = SignedDistanceMapd("label", num_classes=2)({"label": label})
        >>> out["dist"][1].tolist()   # spacing (2, 1): along W steps of 1
        [[1.0, 0.0, -1.0, 0.0, 1.0, 2.0]]
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_key: str | Sequence[str] = "dist",
        num_classes: int | None = None,
        spacing: float | Sequence[float] | None = None,
        method: str = "auto",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        output_keys = [output_key] if isinstance(output_key, str) else list(output_key)
        if len(output_keys) != len(self.keys):
            raise ValueError(
                f"output_key must name one output per key ({len(self.keys)}), got {output_key!r}"
            )
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if spacing is not None:
            normalize_spacing(spacing, 1 if isinstance(spacing, (int, float)) else len(spacing))
        self.output_keys = output_keys
        self.num_classes = num_classes
        self.spacing = spacing
        self.method = method

    def _spacing(self, label, spatial_dims: int) -> tuple[float, ...]:
        if self.spacing is not None:
            return normalize_spacing(self.spacing, spatial_dims)
        if isinstance(label, MetaTensor):
            return normalize_spacing([float(s) for s in label.pixdim[:spatial_dims]], spatial_dims)
        return (1.0,) * spatial_dims

    def maps(self, label) -> torch.Tensor:
        """Signed maps ``(C, *spatial)`` of one channel-first label."""
        data = torch.as_tensor(np.asarray(label) if not isinstance(label, torch.Tensor) else label)
        if isinstance(data, MetaTensor):
            data = data.as_tensor()
        if data.ndim not in (3, 4):
            raise ValueError(
                f"label must be channel-first (C, H, W) or (C, D, H, W), got {tuple(data.shape)}"
            )
        if data.shape[0] == 1 and self.num_classes is not None and self.num_classes > 1:
            labels = data[0].long()
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ValueError(
                    f"label values must lie in [0, {self.num_classes - 1}] for "
                    f"num_classes={self.num_classes}, found [{int(labels.min())}, {int(labels.max())}]"
                )
            onehot = torch.nn.functional.one_hot(labels, self.num_classes).movedim(-1, 0)
        elif data.shape[0] == 1 and self.num_classes is None:
            raise ValueError(
                "num_classes is required for a (1, *spatial) label map (use 1 for a binary mask)"
            )
        else:
            onehot = data
        spacing = self._spacing(label, data.ndim - 1)
        return signed_distance_map(onehot[None], spacing, method=self.method)[0]

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key, out_key in self.key_iterator(d, self.output_keys):
            label = d[key]
            dist = self.maps(label)
            if isinstance(label, MetaTensor):
                dist = MetaTensor(dist, meta=dict(label.meta), applied_operations=[])
            d[out_key] = dist
        return d
