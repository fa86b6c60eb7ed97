"""Constructor-argument checks shared by every loss class: errors that name the loss and the argument and
list the valid ones.

A bad argument raises :class:`LossArgumentError`, a ``ValueError`` (segbalance's rule) that is also the
``TypeError`` Python and MONAI raise for an unknown or surplus argument, so code written against either
keeps catching it:

>>> from segbalance.monai_losses import get
>>> get("dfl", alpha=[1, 2, 3])
Traceback (most recent call last):
...
segbalance.monai_losses.arguments.LossArgumentError: DualFocalLoss: alpha must be a real number, got [1, 2, 3]
"""

from __future__ import annotations

import inspect
import math
import numbers

__all__ = ["LossArgumentError", "ArgumentChecked", "valid_arguments", "check_call", "check_number"]


class LossArgumentError(ValueError, TypeError):
    """A bad constructor argument of a loss: a ``ValueError`` that is also a ``TypeError``."""


def valid_arguments(cls: type) -> list[str]:
    """The constructor arguments of ``cls``, in signature order: its own ``__init__``'s, then (through
    ``**kwargs``) those of its bases."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass.__module__.startswith("torch"):
            continue
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in names:
                names.append(p.name)
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def unknown_arguments_error(cls: type, unknown) -> LossArgumentError:
    """The error for keyword arguments ``unknown`` that no constructor of ``cls`` takes."""
    listed = ", ".join(repr(k) for k in sorted(unknown))
    return LossArgumentError(
        f"{cls.__name__} got unknown argument(s) {listed}; valid arguments: {', '.join(valid_arguments(cls))}"
        + getattr(cls, "unknown_argument_hint", "")
    )


def check_call(cls: type, args: tuple, kwargs: dict) -> None:
    """Raise :class:`LossArgumentError` when ``cls(*args, **kwargs)`` does not fit ``cls.__init__``'s
    signature (too many positional arguments, an unknown keyword); missing required ones are left to
    ``__init__`` (``copy``/``pickle`` call ``cls.__new__(cls)`` without arguments)."""
    signature = inspect.signature(cls.__init__)
    try:
        signature.bind_partial(None, *args, **kwargs)
    except TypeError as exc:
        known = set(signature.parameters)
        unknown = [k for k in kwargs if k not in known]
        has_var_kw = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
        if unknown and not has_var_kw:
            raise unknown_arguments_error(cls, unknown) from None
        positional = [
            p.name
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
        ]
        raise LossArgumentError(
            f"{cls.__name__}: {exc}; positional arguments: "
            f"{', '.join(positional) or 'none (keywords only)'}; "
            f"valid arguments: {', '.join(valid_arguments(cls))}"
        ) from None


class ArgumentChecked:
    """Mixin: checks the constructor call (:func:`check_call`) before ``__init__`` runs."""

    def __new__(cls, *args, **kwargs):
        check_call(cls, args, kwargs)
        return super().__new__(cls)


def check_number(
    owner: str,
    name: str,
    value,
    *,
    low: float | None = None,
    low_open: bool = False,
    high: float | None = None,
    high_open: bool = False,
) -> float:
    """``value`` (a number, or a 0-dim tensor or array) as a float when it is a finite real number within the
    bounds (``low``/``high``, excluded with ``*_open``); :class:`LossArgumentError` naming ``owner`` and
    ``name`` otherwise."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # a 0-dim tensor or array
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise LossArgumentError(f"{owner}: {name} must be a real number, got {value!r}")
    v = float(value)
    if (low is not None and (v < low or (low_open and v == low))) or (
        high is not None and (v > high or (high_open and v == high))
    ):
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        raise LossArgumentError(
            f"{owner}: {name} must be {' and '.join(x for x in (lo, hi) if x)}, got {value!r}"
        )
    return v
