"""The ``segbalance`` command: one sub-command per job, each defined in the module that does the job.

Sub-command modules expose ``register(subparsers)``, which adds a parser and sets ``func`` to a callable
taking the parsed ``argparse.Namespace`` and returning an exit code. They are imported here, but keep
heavy imports (torch, nnunetv2) inside their ``func`` so ``segbalance --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from segbalance.errors import USER_ERRORS, MissingExtraError

# command -> module whose ``register(subparsers)`` defines it, in --help order
SUBCOMMANDS: dict[str, str] = {
    "demo": "segbalance.demo",
    "train": "segbalance.training.cli",
    "predict": "segbalance.training.predict",
    "export-seg": "segbalance.training.export_seg",
    "losses": "segbalance.loss_table",
    "convert": "segbalance.preprocessing.cli",
    "evaluate": "segbalance.evaluation.cli",
    "nnunet-env": "segbalance.trainers.cli",
    "compare": "segbalance.compare.cli",
    "selfcheck": "segbalance.selfcheck",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``segbalance`` parser; with ``only``, just that sub-command is imported and registered (a run
    of one command does not import the others' modules: ``segbalance evaluate`` then starts without
    pydicom, MONAI or torch)."""
    parser = argparse.ArgumentParser(
        prog="segbalance",
        description="Class-imbalance losses, nnU-Net v2 trainers, preprocessing, evaluation for 3D CT/MRI.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, module_name in SUBCOMMANDS.items():
        if only is not None and command != only:
            continue
        try:
            module = importlib.import_module(module_name)
        except MissingExtraError as exc:  # its extra is not installed: the command explains that when run
            _register_unavailable(sub, command, exc)
            continue
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):  # sub-command not part of this build
                continue
            raise
        module.register(sub)
    return parser


def _register_unavailable(sub, name: str, exc: MissingExtraError) -> None:
    """A stand-in for sub-command ``name`` that reports the missing extra (one line, exit 2) when run."""

    def unavailable(_args: argparse.Namespace) -> int:
        raise exc

    p = sub.add_parser(name, help=f"(not installed: {exc})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=unavailable)


def _debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """``--debug`` anywhere on the command line (or ``SEGBALANCE_DEBUG=1``); the remaining arguments."""
    rest = [a for a in argv if a != "--debug"]
    env = os.environ.get("SEGBALANCE_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    return env or len(rest) != len(argv), rest


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command. Bad input (:data:`segbalance.errors.USER_ERRORS`) is reported as one line,
    ``segbalance <command>: error: <message>``, with exit code 2; the traceback only with ``--debug`` or
    ``SEGBALANCE_DEBUG=1``. Ctrl-C exits 130 with one line."""
    debug, argv = _debug_requested(list(sys.argv[1:] if argv is None else argv))
    first = next((a for a in argv if not a.startswith("-")), None)
    wants_help = first is None or any(a in ("-h", "--help") for a in argv[:argv.index(first)])
    parser = build_parser(only=first if first in SUBCOMMANDS and not wants_help else None)
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback on errors (also SEGBALANCE_DEBUG=1)")
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    prog = f"segbalance {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if debug:
            traceback.print_exc()
        if isinstance(exc, OSError) and exc.filename and exc.strerror:  # "[Errno 2] …: 'x'" -> "x: …"
            message = f"{exc.filename}: {exc.strerror}"
        else:
            message = " ".join(str(exc).split()) or type(exc).__name__
        hint = "" if debug else " (--debug for the traceback)"
        print(f"{prog}: error: {message}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
