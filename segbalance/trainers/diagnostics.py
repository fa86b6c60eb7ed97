"""Per-epoch gradient balance of a trainer's loss on its own batches (``SEGBALANCE_DIAGNOSTICS=1``).

Why a class stays off is a question about the gradient that reaches its logit ``u_c``. On the first
:data:`SAMPLES` training batches of every epoch, :class:`RareClassDiagnostics` takes the network's
highest-resolution output ``u`` (detached: training is unchanged) and the target, evaluates the trainer's
own loss on that scale and, on the same tensors, cross-entropy, and records per foreground class ``c``:

* ``z_pos``/``z_neg``: mean softmax probability of ``c`` on its own voxels and on every other voxel;
* ``pull``: ``−N·mean_{v∈c} ∂L/∂u_{c,v}`` (how hard the loss raises ``u_c`` on a voxel of ``c``; ``N`` the
  valid voxels, so a voxel-mean loss is in per-voxel units: CE's is ``1 − z_c``);
* ``push``: ``N·mean_{v∉c} ∂L/∂u_{c,v}`` (how hard it lowers ``u_c`` elsewhere; CE's is ``z_c``);
* ``pull_ce``/``push_ce``: the same for CE on the same tensors, so ``pull/pull_ce`` and ``push/push_ce``
  are the loss's weights relative to CE's at the network's current state;
* ``others_pos``: ``−N·mean_{v∈c} ∂L/∂u_{j,v}`` for every class ``j`` (what else the loss raises on ``c``'s
  voxels; CE raises nothing but ``u_c``).

One JSON line per epoch in ``<output_folder>/segbalance_diagnostics.jsonl`` with those means and nnU-Net's
pseudo-Dice of the epoch. Label-map datasets only (regions are skipped with a log line). A mixin, as
:class:`~segbalance.trainers.guard.NeverPredictedGuard`; every segbalance trainer has it, off by default.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import Tensor, nn

__all__ = [
    "RareClassDiagnostics",
    "DiagnosedLoss",
    "gradient_balance",
    "read_diagnostics",
    "DIAGNOSTICS_ENV",
    "SAMPLES",
    "FILE",
]

DIAGNOSTICS_ENV = "SEGBALANCE_DIAGNOSTICS"
SAMPLES = 4
FILE = "segbalance_diagnostics.jsonl"


def gradient_balance(loss_fn, logits: Tensor, target: Tensor, ignore_label: int | None = None) -> dict:
    """The quantities of the module doc for ``loss_fn(logits, target)`` on one scale: a dict of per-class
    lists (foreground classes ``1…C−1``), e.g. ``{"z_pos": [...], "pull": [...], ...}``.

    ``logits`` ``(B, C, *spatial)``, ``target`` ``(B, 1, *spatial)`` label map (``ignore_label`` voxels left
    out). Gradients are taken with respect to a float32 copy of ``logits``.
    """
    x = logits.detach().float().requires_grad_(True)
    y = target[:, 0].long()
    valid = torch.ones_like(y, dtype=torch.bool) if ignore_label is None else y != ignore_label
    n = valid.sum().clamp_min(1).float()
    with torch.enable_grad():
        (g,) = torch.autograd.grad(loss_fn(x, target), x)
        ce_target = y.masked_fill(~valid, -100)
        (g_ce,) = torch.autograd.grad(nn.functional.cross_entropy(x, ce_target, ignore_index=-100), x)
    z = torch.softmax(x.detach(), 1)
    out: dict[str, list] = {k: [] for k in ("n_pos", "z_pos", "z_neg", "pull", "push", "pull_ce", "push_ce",
                                            "others_pos")}
    g, g_ce = g * n, g_ce * n  # per-voxel units
    for c in range(1, x.shape[1]):
        pos, neg = (y == c) & valid, (y != c) & valid

        def mean(t: Tensor, m: Tensor) -> float:
            return float(t[m].mean()) if bool(m.any()) else float("nan")

        out["n_pos"].append(int(pos.sum()))
        out["z_pos"].append(mean(z[:, c], pos))
        out["z_neg"].append(mean(z[:, c], neg))
        out["pull"].append(-mean(g[:, c], pos))
        out["push"].append(mean(g[:, c], neg))
        out["pull_ce"].append(-mean(g_ce[:, c], pos))
        out["push_ce"].append(mean(g_ce[:, c], neg))
        out["others_pos"].append([-mean(g[:, j], pos) for j in range(x.shape[1])])
    return out


class DiagnosedLoss(nn.Module):
    """The trainer's loss, unchanged, plus :func:`gradient_balance` on the first ``samples`` training calls
    of each epoch (a call whose output needs no gradient, i.e. validation, is not sampled)."""

    def __init__(self, loss: nn.Module, ignore_label: int | None, samples: int = SAMPLES) -> None:
        super().__init__()
        self.loss = loss
        self.ignore_label = ignore_label
        self.samples = samples
        self.rows: list[dict] = []

    def single_scale(self) -> nn.Module:
        """The loss of one output scale (inside nnU-Net's ``DeepSupervisionWrapper`` when there is one)."""
        return getattr(self.loss, "loss", self.loss)

    def forward(self, output, target):
        value = self.loss(output, target)
        out0 = output[0] if isinstance(output, (list, tuple)) else output
        t0 = target[0] if isinstance(target, (list, tuple)) else target
        if out0.requires_grad and len(self.rows) < self.samples:
            self.rows.append(gradient_balance(self.single_scale(), out0, t0, self.ignore_label))
        return value

    def epoch_summary(self) -> dict:
        """Means over the sampled calls since the last summary (then cleared)."""
        rows, self.rows = self.rows, []
        if not rows:
            return {}
        summary = {"samples": len(rows)}
        for key in rows[0]:
            summary[key] = np.nanmean(np.asarray([r[key] for r in rows], dtype=float), axis=0).tolist()
        return summary


class RareClassDiagnostics(nnUNetTrainer):
    """Mixin for any ``nnUNetTrainer``: with ``SEGBALANCE_DIAGNOSTICS=1`` its loss is wrapped in
    :class:`DiagnosedLoss` and one JSON line per epoch is written (module doc)."""

    def _build_loss(self):
        loss = super()._build_loss()
        if os.environ.get(DIAGNOSTICS_ENV, "").strip().lower() not in ("1", "true", "yes", "on"):
            return loss
        if self.label_manager.has_regions:
            self.print_to_log_file("segbalance diagnostics: region-based dataset, not recorded")
            return loss
        ignore = self.label_manager.ignore_label if self.label_manager.has_ignore_label else None
        self.print_to_log_file(f"segbalance diagnostics: {SAMPLES} batches per epoch → {FILE}")
        return DiagnosedLoss(loss, ignore)

    def on_epoch_end(self):
        epoch = self.current_epoch
        super().on_epoch_end()
        if not isinstance(self.loss, DiagnosedLoss) or self.local_rank != 0:
            return
        summary = self.loss.epoch_summary()
        dice = self.logger.get_value("dice_per_class_or_region", None)
        pseudo = [float(v) for v in dice[epoch]] if len(dice) > epoch else None
        summary = {"epoch": epoch, "pseudo_dice": pseudo, **summary}
        with open(os.path.join(self.output_folder, FILE), "a") as fh:
            fh.write(json.dumps(_strict(summary), allow_nan=False) + "\n")


def _strict(value):
    """``value`` with every NaN/inf float replaced by ``None`` (strict JSON)."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def read_diagnostics(path: str) -> list[dict]:
    """The rows of a diagnostics file, one per epoch (the last written wins: a resumed run rewrites the
    epochs after its checkpoint)."""
    rows: dict[int, dict] = {}
    with open(path) as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                rows[int(row["epoch"])] = row
    return [rows[k] for k in sorted(rows)]
