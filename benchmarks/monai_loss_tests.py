"""MONAI's own unit tests for the six MONAI-named loss classes, run against MONAI and against segbalance.

Takes MONAI's test files from a MONAI git clone (bare or not; nothing is downloaded), writes two copies of
each into a scratch folder — one unchanged (``from monai.losses import X``), one with that import switched to
``from segbalance.monai_losses import X`` (the public names, as a user would switch) — runs pytest on both
with JUnit XML, and counts, per file, the test cases that hold for MONAI and, of those, the ones that hold
for segbalance too:

    git clone --bare https://github.com/Project-MONAI/MONAI /tmp/MONAI.git   # once, anywhere with internet
    python benchmarks/monai_loss_tests.py --monai-git /tmp/MONAI.git [--rev 1.5.1]

Needs ``parameterized`` (MONAI's tests use it: ``pip install parameterized``). MONAI's ``tests.test_utils``
is replaced by a shim with only the ``test_script_save`` they call (MONAI's ``convert_to_torchscript`` with
``verify=True``). Result: ``benchmarks/results/monai_loss_tests.json`` (docs/losses.md, "MONAI-named
classes").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]

#: MONAI's test file → the MONAI-named classes it imports from ``monai.losses`` that segbalance exports
TEST_FILES = {
    "test_dice_loss.py": ["DiceLoss"],
    "test_dice_ce_loss.py": ["DiceCELoss"],
    "test_focal_loss.py": ["FocalLoss"],
    "test_generalized_dice_loss.py": ["GeneralizedDiceLoss"],
    "test_hausdorff_loss.py": ["HausdorffDTLoss"],
    "test_tversky_loss.py": ["TverskyLoss"],
}

TEST_UTILS_SHIM = '''"""The one helper of MONAI's tests/test_utils.py that the loss tests call."""
import os
import tempfile

from monai.networks.utils import convert_to_torchscript


def test_script_save(net, *inputs, device=None, rtol=1e-4, atol=0.0):
    with tempfile.TemporaryDirectory() as tempdir:
        convert_to_torchscript(model=net, filename_or_obj=os.path.join(tempdir, "model.ts"), verify=True,
                               inputs=inputs, device="cpu", rtol=rtol, atol=atol)
'''


def switch_import(source: str, names: list[str], test_file: str) -> str:
    """Replace ``from monai.losses import A, B`` so that the names in ``names`` come from segbalance and any
    other name (e.g. ``LogHausdorffDTLoss``) still from MONAI; refuses a file without that import."""
    pattern = re.compile(r"^from monai\.losses import (.+)$", re.MULTILINE)
    match = pattern.search(source)
    if match is None:
        raise SystemExit(f"{test_file}: no 'from monai.losses import …' line to switch")
    imported = [n.strip() for n in match.group(1).split(",")]
    ours = [n for n in imported if n in names]
    theirs = [n for n in imported if n not in names]
    lines = [f"from segbalance.monai_losses import {', '.join(ours)}"]
    if theirs:
        lines.append(f"from monai.losses import {', '.join(theirs)}")
    return source[: match.start()] + "\n".join(lines) + source[match.end():]


def run_pytest(folder: Path, xml: Path) -> None:
    """pytest on the copied files; a failing test is data here, so the exit code is not checked."""
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
                    "-p", "no:randomly", f"--junitxml={xml}", *sorted(TEST_FILES)], cwd=folder,
                   env={**os.environ, "PYTHONPATH": f"{ROOT}:{folder}"}, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def read_junit(xml: Path) -> dict[str, str]:
    """``file::class::test`` → ``pass``, ``failure``, ``error`` or ``skipped``."""
    out = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        bad = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        out[f"{case.get('classname')}::{case.get('name')}"] = bad[0] if bad else "pass"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--monai-git", type=Path, required=True, help="a MONAI git clone (bare or not)")
    ap.add_argument("--rev", default="HEAD", help="the MONAI revision whose tests to take (default HEAD)")
    ap.add_argument("--json", default="monai_loss_tests.json", help="file name in benchmarks/results")
    args = ap.parse_args(argv)
    try:
        import parameterized  # noqa: F401
    except ImportError:
        ap.error("MONAI's tests need the 'parameterized' package: pip install parameterized")
    commit = subprocess.run(["git", "-C", str(args.monai_git), "rev-parse", args.rev], capture_output=True,
                            text=True)
    if commit.returncode:
        ap.error(f"--monai-git {args.monai_git} --rev {args.rev}: {commit.stderr.strip()}")
    import monai

    with tempfile.TemporaryDirectory() as scratch:
        results = {}
        for variant in ("monai", "segbalance"):
            folder = Path(scratch) / variant
            (folder / "tests").mkdir(parents=True)
            (folder / "tests" / "__init__.py").write_text("")
            (folder / "tests" / "test_utils.py").write_text(TEST_UTILS_SHIM)
            for name, classes in TEST_FILES.items():
                show = ["git", "-C", str(args.monai_git), "show", f"{args.rev}:tests/losses/{name}"]
                source = subprocess.run(show, capture_output=True, text=True, check=True).stdout
                if variant == "segbalance":
                    source = switch_import(source, classes, name)
                (folder / name).write_text(source)
            run_pytest(folder, Path(scratch) / f"{variant}.xml")
            results[variant] = read_junit(Path(scratch) / f"{variant}.xml")
    per_file = {}
    for name in TEST_FILES:
        stem = name.removesuffix(".py")
        held = [k for k, v in results["monai"].items() if k.startswith(stem + ".") and v == "pass"]
        ours = [k for k in held if results["segbalance"].get(k) == "pass"]
        per_file[name] = {"hold_for_monai": len(held), "hold_for_segbalance_too": len(ours),
                          "not_holding": sorted(set(held) - set(ours))}
    total_held = sum(f["hold_for_monai"] for f in per_file.values())
    total_ours = sum(f["hold_for_segbalance_too"] for f in per_file.values())
    payload = {
        "what": "MONAI's tests/losses for the six MONAI-named classes, import switched to "
                "segbalance.monai_losses",
        "monai_tests_commit": commit.stdout.strip(),
        "monai_installed": monai.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "hold_for_monai": total_held,
        "hold_for_segbalance_too": total_ours,
        "not_holding_for_monai": sorted(k for k, v in results["monai"].items() if v != "pass"),
        "per_file": per_file,
    }
    path = RESULTS / args.json
    path.write_text(json.dumps(payload, indent=1) + "\n")
    for name, f in per_file.items():
        print(f"{name:<32} {f['hold_for_segbalance_too']:>3} of {f['hold_for_monai']:>3}")
    print(f"{'all':<32} {total_ours:>3} of {total_held:>3}   (wrote {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
