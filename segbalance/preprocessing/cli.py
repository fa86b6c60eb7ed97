"""``segbalance convert nnunet|slices|patches SRC DST``: the preprocessing converters on the command line.

SRC holds ``images/`` + ``labels/`` (or ``imagesTr/`` + ``labelsTr/``) matched by case id (file name
without its format extension; a DICOM series is a sub-folder named after the case). Finished cases are
skipped on a re-run; every failed case is listed at the end and the exit code is 1. Errors that stop the
whole run (bad arguments, no cases, an unusable destination) are one line with exit code 2: argument
errors from the parsers here, the rest from ``segbalance.cli.main``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn

__all__ = ["register"]


class _OneLineErrors(argparse.ArgumentParser):
    """Argument errors of ``segbalance convert <target>`` as one line (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _sizes(n: int, example: str) -> Callable[[str], tuple[int, ...]]:
    """argparse type: ``n`` positive integers separated by ``,`` or ``x``."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.lower().replace("x", ",").split(","))
        except ValueError:
            values = ()
        if len(values) != n or min(values) < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {n} positive integers like {example}")
        return values

    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return value


_LABEL_MAP_HELP = ("value=name list naming the segments / ROIs of DICOM-SEG or RTSTRUCT labels, e.g. "
                   "1=GTV,2=Lung_L (case-insensitive; the higher value wins where structures overlap)")


def _label_map(text: str | None) -> dict[int, str] | None:
    from segbalance.io.dicom_common import parse_name_map

    return parse_name_map(text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="source folder: images/ + labels/ (or imagesTr/ + labelsTr/)")
    p.add_argument("dst", help="destination folder (created; never the source)")
    p.add_argument("-j", "--jobs", type=_positive_int, default=1, help="worker processes (default 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="rewrite finished cases / accept a destination not made by this command")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    conv = subparsers.add_parser(
        "convert", help="convert MHD/DICOM/NIfTI/NRRD cases to nnU-Net, 2D slices or 3D patches",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = conv.add_subparsers(dest="target", metavar="TARGET", required=True, parser_class=_OneLineErrors)

    nn = sub.add_parser("nnunet", help="nnU-Net v2 raw dataset DST/DatasetXXX_Name")
    _common(nn)
    nn.add_argument("--dataset-id", type=int, required=True, help="nnU-Net dataset id (1-999)")
    nn.add_argument("--name", required=True, help="dataset name (DatasetXXX_<name>)")
    nn.add_argument("--label-map", default=None,
                    help="source value=name list, e.g. 0=background,1=organ,2=lesion "
                         "(values remapped to 0..K-1); names DICOM-SEG segments / RTSTRUCT ROIs")
    nn.add_argument("--channel-names", default=None, help="comma-separated channel names (default CT)")
    nn.add_argument("--file-ending", default=".nii.gz", choices=[".nii.gz", ".mha", ".nrrd", ".nii"])
    nn.set_defaults(func=_run_nnunet)

    sl = sub.add_parser("slices", help="2D slices (PNG/NPZ) + manifest, the Dual Focal protocol")
    _common(sl)
    sl.add_argument("--axis", default="axial", help="axial|coronal|sagittal or 0|1|2 (array z,y,x)")
    sl.add_argument("--size", type=_sizes(2, "224,224"), default=(224, 224),
                    help="output rows,cols (default 224,224)")
    sl.add_argument("--native-size", action="store_true", help="keep the slices' size (no resizing)")
    sl.add_argument("--window", default="ct-abdomen",
                    help="CENTER,WIDTH in HU, pLOW,HIGH percentiles (MRI), or ct-abdomen|ct-lung|ct-brain|"
                         "ct-bone|mri (default ct-abdomen = 40,400)")
    sl.add_argument("--format", default="png8", choices=["png8", "png16", "npz"])
    sl.add_argument("--fg-only", action="store_true", help="only slices with a foreground voxel")
    sl.add_argument("--n-classes", type=int, default=None, help="count_<k> columns in the manifest")
    sl.add_argument("--label-map", default=None, help=_LABEL_MAP_HELP)
    sl.set_defaults(func=_run_slices)

    pa = sub.add_parser("patches", help="3D patches (NPZ) + manifest, grid or foreground-aware random")
    _common(pa)
    pa.add_argument("--patch-size", type=_sizes(3, "64,64,64"), default=(64, 64, 64),
                    help="z,y,x (default 64,64,64)")
    pa.add_argument("--mode", default="random", choices=["random", "grid"])
    pa.add_argument("--overlap", type=float, default=0.0, help="grid overlap fraction in [0, 1)")
    pa.add_argument("--n-patches", type=int, default=16, help="random patches per case")
    pa.add_argument("--fg-share", type=float, default=0.5, help="share of random patches on foreground")
    pa.add_argument("--seed", type=int, default=0)
    pa.add_argument("--n-classes", type=int, default=None, help="count_<k> columns in the manifest")
    pa.add_argument("--compress", action="store_true", help="zlib-compressed NPZ (smaller, ~4x slower)")
    pa.add_argument("--label-map", default=None, help=_LABEL_MAP_HELP)
    pa.set_defaults(func=_run_patches)


def _run_nnunet(args: argparse.Namespace) -> int:
    from segbalance.preprocessing.nnunet import convert_to_nnunet

    report = convert_to_nnunet(
        args.src, args.dst, args.dataset_id, args.name, label_map=args.label_map,
        channel_names=args.channel_names.split(",") if args.channel_names else None,
        file_ending=args.file_ending, jobs=args.jobs, overwrite=args.overwrite, progress=not args.no_progress,
    )
    from segbalance.preprocessing.runs import report_exit_code

    return report_exit_code(report, args.dst)


def _run_slices(args: argparse.Namespace) -> int:
    from segbalance.preprocessing.slices import convert_to_slices

    report = convert_to_slices(
        args.src, args.dst, axis=args.axis, size=None if args.native_size else args.size, window=args.window,
        fmt=args.format, foreground_only=args.fg_only, n_classes=args.n_classes, jobs=args.jobs,
        overwrite=args.overwrite, progress=not args.no_progress, label_map=_label_map(args.label_map),
    )
    from segbalance.preprocessing.runs import report_exit_code

    return report_exit_code(report, args.dst)


def _run_patches(args: argparse.Namespace) -> int:
    from segbalance.preprocessing.patches import convert_to_patches

    report = convert_to_patches(
        args.src, args.dst, patch_size=args.patch_size, mode=args.mode, overlap=args.overlap,
        n_patches=args.n_patches, fg_share=args.fg_share, seed=args.seed, n_classes=args.n_classes,
        compress=args.compress, jobs=args.jobs, overwrite=args.overwrite, progress=not args.no_progress,
        label_map=_label_map(args.label_map),
    )
    from segbalance.preprocessing.runs import report_exit_code

    return report_exit_code(report, args.dst)
