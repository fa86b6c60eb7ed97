"""Per-epoch loss schedules: the boundary weight ``α`` of Kervadec et al. and the helpers that set it.

A schedule is a pure function of the epoch: the training loops (``segbalance train`` and the nnU-Net
trainers) call :func:`set_schedulers_epoch` at the start of every epoch, so resuming needs no saved state.
"""

from __future__ import annotations

from torch import nn

__all__ = ["BoundaryWeightScheduler", "loss_schedulers", "set_schedulers_epoch"]


class BoundaryWeightScheduler:
    """The rebalancing weight of Kervadec et al.: ``α_e = min(start + step_size · e, max_alpha)``.

    ``α`` weighs the boundary term in ``(1 − α)·L_region + α·L_B``; it is a pure function of ``epoch``:
    set it with :func:`set_schedulers_epoch` (or :meth:`step` once per epoch). Resuming needs no saved
    state, and no trainer saves or reads any (an older checkpoint's ``segbalance_loss_state`` entry is
    ignored: α follows the checkpoint's epoch); ``state_dict``/``load_state_dict`` only copy a scheduler.

    Example:
        >>> s = BoundaryWeightScheduler()
        >>> s.alpha, s.step(), s.step()
        (0.01, 0.02, 0.03)
        >>> s.epoch = 9; s.alpha
        0.1
    """

    def __init__(self, start: float = 0.01, step_size: float = 0.01, max_alpha: float = 0.99) -> None:
        for name, value in (("start", start), ("step_size", step_size), ("max_alpha", max_alpha)):
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        if start > max_alpha:
            raise ValueError(f"start ({start}) must not exceed max_alpha ({max_alpha})")
        self.start = float(start)
        self.step_size = float(step_size)
        self.max_alpha = float(max_alpha)
        self.epoch = 0

    @property
    def alpha(self) -> float:
        return round(min(self.start + self.step_size * self.epoch, self.max_alpha), 12)

    def step(self) -> float:
        """Advance one epoch; returns the new ``alpha``."""
        self.epoch += 1
        return self.alpha

    def state_dict(self) -> dict:
        return {
            "start": self.start,
            "step_size": self.step_size,
            "max_alpha": self.max_alpha,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        missing = {"start", "step_size", "max_alpha", "epoch"} - set(state)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)}")
        self.__init__(state["start"], state["step_size"], state["max_alpha"])
        self.epoch = int(state["epoch"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha}, epoch={self.epoch})"


def loss_schedulers(loss: nn.Module) -> list:
    """The distinct per-epoch schedulers (``.scheduler`` with ``step()``) inside ``loss``."""
    found: list = []
    for module in loss.modules():
        sched = getattr(module, "scheduler", None)
        if sched is not None and hasattr(sched, "step") and all(sched is not s for s in found):
            found.append(sched)
    return found


def set_schedulers_epoch(loss: nn.Module, epoch: int) -> list[float]:
    """Put every scheduler in ``loss`` at ``epoch`` (0-based; resume-safe); returns their ``alpha``."""
    alphas = []
    for sched in loss_schedulers(loss):
        sched.epoch = int(epoch)
        alphas.append(sched.alpha)
    return alphas
