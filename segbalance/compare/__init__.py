"""``segbalance compare``: which loss finds the lesions in *your* data.

nnU-Net trainers × folds on an nnU-Net dataset: the real ``nnUNetv2_train`` (finished runs reused,
interrupted ones resumed), ``nnUNetv2_predict --save_probabilities`` and ``segbalance evaluate`` per run,
then a report with paired per-case statistics against a baseline trainer and plots (docs/compare.md).

* :mod:`segbalance.compare.dataset` — the input, checked before anything starts;
* :mod:`segbalance.compare.runs` — one run (train → predict → evaluate) and its record;
* :mod:`segbalance.compare.backends` — local, one run per GPU, submitit (SLURM and its local executor);
* :mod:`segbalance.compare.report` — aggregation, Wilcoxon + Holm, bootstrap CI, markdown/JSON/PNG;
* :mod:`segbalance.compare.cli` — the command.

Layer: above trainers, training and evaluation, below the command line (tests/test_import_layers.py).
"""

from __future__ import annotations

__all__ = ["Run", "Setup", "execute_run", "write_report"]


def __getattr__(name: str):  # light: importing the package imports neither nnunetv2 nor matplotlib
    if name in ("Run", "Setup", "execute_run"):
        from segbalance.compare import runs

        return getattr(runs, name)
    if name == "write_report":
        from segbalance.compare.report import write_report

        return write_report
    raise AttributeError(name)
