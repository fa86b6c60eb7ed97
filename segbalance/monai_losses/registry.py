"""Name → loss-module registry used by the CLI, the nnU-Net trainers and the benchmarks.

>>> from segbalance.monai_losses import get, names
>>> "dfl" in names()
True
>>> loss = get("dfl", beta=1.0)
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["register", "get", "names", "loss_class"]

_REGISTRY: dict[str, type[nn.Module]] = {}


def register(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator registering a loss module under ``name`` (lower case, unique)."""

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"loss name {name!r} is already registered to {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return deco


def _ensure_loaded() -> None:
    # importing the package registers every built-in loss
    import segbalance.monai_losses  # noqa: F401


def names() -> list[str]:
    """Sorted names of every registered loss."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def loss_class(name: str) -> type[nn.Module]:
    """The module class registered under ``name``; ``ValueError`` listing the known names otherwise."""
    _ensure_loaded()
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown loss name {name!r}; known losses: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def get(name: str, **kwargs) -> nn.Module:
    """Instantiate the loss registered under ``name`` with ``kwargs`` (its constructor's arguments)."""
    cls = loss_class(name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for loss {name!r} ({cls.__name__}): {exc}") from exc
