"""Exceptions that the ``segbalance`` command reports as one line (exit code 2) instead of a traceback.

Library code raises the ordinary Python exception for what went wrong (``ValueError`` for a bad argument
or a bad file, ``FileNotFoundError``, ``PermissionError`` …) with a message that names the argument or the
file. :data:`USER_ERRORS` lists the exception types the command line treats as the user's input being
wrong: it prints ``segbalance <command>: error: <message>`` and exits 2; ``--debug`` (or
``SEGBALANCE_DEBUG=1``) shows the traceback as well.
"""

from __future__ import annotations

__all__ = ["UserError", "MissingExtraError", "USER_ERRORS"]


class UserError(ValueError):
    """Bad input given by the user (an argument, a file, a folder); the message names it."""


class MissingExtraError(ImportError):
    """An optional dependency group (``pip install "segbalance[<extra>]"``) is not installed."""

    def __init__(self, extra: str, module: str, needed_for: str) -> None:
        super().__init__(
            f"{needed_for} needs the {module!r} package, which is not installed: "
            f'pip install "segbalance[{extra}]"'
        )
        self.extra = extra
        self.name = module


#: Exception types reported as one line with exit code 2 by the command line (``segbalance.cli.main``).
#: ``FloatingPointError`` covers :class:`segbalance.training.engine.NonFiniteLossError` (a diverged run).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, MissingExtraError, FloatingPointError)
