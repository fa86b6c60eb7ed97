"""``segbalance nnunet-env``: print the shell line that lets nnU-Net find the segbalance trainers."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "nnunet-env",
        help="print 'export nnUNet_extTrainer=…' for nnU-Net to find the segbalance trainers",
        description='Print the nnUNet_extTrainer export line; use as: eval "$(segbalance nnunet-env)". '
        "An existing nnUNet_extTrainer value is kept and the segbalance folder appended.",
    )
    parser.add_argument("--list", action="store_true", help="also list the trainers (as shell comments)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segbalance.trainers.discovery import export_line

    print(export_line())
    if args.list:
        from segbalance.monai_losses.registry import supports_multilabel
        from segbalance.trainers.table import trainer_specs

        for trainer, spec in trainer_specs().items():
            regions = ", region datasets too" if supports_multilabel(spec.loss, spec.kwargs) else ""
            print(f"# {trainer}: loss {spec.loss!r} (also {trainer}_5epochs, {trainer}_debug{regions})")
        print('# nnUNetTrainerSegBalance: loss from SEGBALANCE_LOSS=\'{"name": …, "kwargs": {…}}\'')
    return 0
