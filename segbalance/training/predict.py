"""Inference with a model trained by :func:`segbalance.training.train`.

3D models: MONAI ``sliding_window_inference`` over the whole volume (patch = training patch size, 50 %
overlap, Gaussian blending). 2D models: each axial slice resized to the training size, predicted, and the
logits resized back before the argmax.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["predict_volume"]


def _normalise(image: np.ndarray, ct: bool) -> torch.Tensor:
    from segbalance.training.data import intensity_transform

    return torch.as_tensor(intensity_transform(ct)({"image": image.astype(np.float32)})["image"]).float()


@torch.no_grad()
def predict_volume(model: torch.nn.Module, info: dict, image: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Label map (z, y, x) uint8 of ``image`` ((z, y, x) or (1, z, y, x)) from a trained model.

    ``info`` is the checkpoint's info (:func:`~segbalance.training.engine.load_model`): dim, size, ct.
    """
    from monai.inferers import sliding_window_inference

    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be (z, y, x) or (1, z, y, x), got shape {image.shape}")
    device = next(model.parameters()).device
    x = _normalise(image, info["ct"]).to(device)
    model.eval()
    if info["dim"] == 3:
        logits = sliding_window_inference(
            x[None],
            roi_size=tuple(info["size"]),
            sw_batch_size=batch_size,
            predictor=model,
            overlap=0.5,
            mode="gaussian",
        )
        return logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
    slices = x[0][:, None]  # (z, 1, y, x)
    out = []
    for i in range(0, slices.shape[0], batch_size):
        s = slices[i : i + batch_size]
        small = F.interpolate(s, size=tuple(info["size"]), mode="bilinear", align_corners=False)
        logits = F.interpolate(model(small), size=s.shape[-2:], mode="bilinear", align_corners=False)
        out.append(logits.argmax(1))
    return torch.cat(out).cpu().numpy().astype(np.uint8)
