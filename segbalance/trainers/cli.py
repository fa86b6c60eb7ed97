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
        from segbalance.trainers import TRAINER_LOSSES

        for trainer, loss in TRAINER_LOSSES.items():
            print(f"# {trainer}: loss {loss!r} (also {trainer}_5epochs, {trainer}_debug)")
        print('# nnUNetTrainerSegBalance: loss from SEGBALANCE_LOSS=\'{"name": …, "kwargs": {…}}\'')
    return 0
