"""The ``segbalance`` command: one sub-command per job, each defined in the module that does the job.

Sub-command modules expose ``register(subparsers)``, which adds a parser and sets ``func`` to a callable
taking the parsed ``argparse.Namespace`` and returning an exit code. They are imported here, but keep
heavy imports (torch, nnunetv2) inside their ``func`` so ``segbalance --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, attribute) of each sub-command's register function, in --help order
SUBCOMMANDS = [
    "segbalance.demo",  # demo
    "segbalance.training.cli",  # train
    "segbalance.loss_table",  # losses
    "segbalance.preprocessing.cli",  # convert
    "segbalance.evaluation.cli",  # evaluate
    "segbalance.trainers.cli",  # nnunet-env
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segbalance",
        description="Class-imbalance losses, nnU-Net v2 trainers, preprocessing, evaluation for 3D CT/MRI.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):  # sub-command not part of this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
