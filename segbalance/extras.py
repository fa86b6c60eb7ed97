"""Optional dependency groups ("extras") and the clear error raised when one is missing.

``pip install segbalance`` installs the core (torch, numpy, scipy, edt: the loss library
:mod:`segbalance.monai_losses`). Everything else belongs to an extra of ``pyproject.toml``; a part that
needs one calls :func:`require` when it is imported, so a missing package is reported as
``pip install "segbalance[<extra>]"`` instead of a bare ``ModuleNotFoundError`` deep inside.

>>> require("numpy", needed_for="this doctest")  # present: returns quietly
>>> EXTRA_OF["nnunetv2"]
'nnunet'
"""

from __future__ import annotations

import importlib.util

from segbalance.errors import MissingExtraError

__all__ = ["EXTRA_OF", "require"]

#: import name → the extra of ``pyproject.toml`` that installs it
EXTRA_OF: dict[str, str] = {
    "monai": "monai",
    "tqdm": "monai",
    "matplotlib": "monai",
    "nnunetv2": "nnunet",
    "SimpleITK": "io",
    "nibabel": "io",
    "pydicom": "io",
    "highdicom": "io",
    "cc3d": "io",
    "skimage": "io",
    "PIL": "io",
    "submitit": "compare",
}


def require(*modules: str, needed_for: str) -> None:
    """Raise :class:`~segbalance.errors.MissingExtraError` naming the extra if a module is not installed.

    Only looks the modules up (``importlib.util.find_spec``); importing them stays with the caller.
    """
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(EXTRA_OF.get(module, "all"), module, needed_for)
