"""Strict JSON for every results file that ``segbalance evaluate`` writes.

Python's :func:`json.dumps` writes ``NaN`` and ``Infinity`` by default, which is not JSON (RFC 8259): strict
parsers (JavaScript's ``JSON.parse``, ``jq``, Go, Rust's serde) refuse the whole file. Here every non-finite
float becomes ``null`` and the file says why a value can be null (:data:`NULL_MEANS`, written under the key
``"null_means"``); :func:`loads_strict` is the strict parser the tests read every output with.

>>> dumps_strict({"dice": float("nan"), "hd95": float("inf"), "n": 2})
'{"dice": null, "hd95": null, "n": 2}'
>>> loads_strict('{"a": NaN}')
Traceback (most recent call last):
...
ValueError: not strict JSON: NaN
"""

from __future__ import annotations

import json
import math

import numpy as np

#: why a value in a results file can be null (NaN or infinite before writing)
NULL_MEANS = {
    "per case and class": "the metric is undefined there: every metric of a class absent from both the "
                          "ground truth and the prediction (flag both_empty); recall when the ground truth "
                          "is empty (flag false_positive); a lesion rate whose denominator is 0 (sensitivity "
                          "without GT lesions, precision without predicted components); cc_dice/cc_nsd "
                          "without GT components and without prediction",
    "mean/std": "no case has a finite value (n = 0)",
    "pooled rates": "the denominator summed over all cases is 0 (no GT lesion, no predicted component)",
    "ap, sensitivity_at_fp, froc": "no ground-truth lesion of the class in any case (sensitivity undefined)",
    "auroc": "every case has a lesion, or none has (case-level ROC needs positives and negatives)",
    "froc.thresholds[0]": "the curve's first point, (0 FP per case, sensitivity 0), lies above every score",
    "case_score": "never null; 0 when a case has no candidate",
}


def to_strict(obj):
    """A copy of ``obj`` with NaN/inf floats as ``None``, numpy scalars and arrays as Python values,
    tuples as lists."""
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: to_strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_strict(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def dumps_strict(obj, **kwargs) -> str:
    """``json.dumps`` of :func:`to_strict` ``(obj)`` with ``allow_nan=False``: always valid JSON."""
    return json.dumps(to_strict(obj), allow_nan=False, **kwargs)


def _refuse(constant: str):
    raise ValueError(f"not strict JSON: {constant}")


def loads_strict(text: str):
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity`` (a strict JSON parser)."""
    return json.loads(text, parse_constant=_refuse)


def nan_for_null(obj):
    """The inverse for rows read back from a cache: ``None`` becomes NaN (rows hold no other None)."""
    if isinstance(obj, dict):
        return {k: nan_for_null(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [nan_for_null(v) for v in obj]
    return float("nan") if obj is None else obj
