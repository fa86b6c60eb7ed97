"""Packaging: the core installs lean, extras are named when missing, the import graph has no cycle."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

import segbalance

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "segbalance"
EXTRA_MODULES = ["monai", "nnunetv2", "SimpleITK", "nibabel", "pydicom", "highdicom", "cc3d", "skimage",
                 "PIL", "tqdm", "matplotlib", "pandas", "torchvision"]

# A child interpreter in which the optional packages cannot be imported (as after `pip install segbalance`).
BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = set(sys.argv[1].split(","))

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    import importlib.util
    _find = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in BLOCKED else _find(name, *a)
    """
)


def run_without_extras(code: str) -> subprocess.CompletedProcess:
    script = BLOCKER + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script, ",".join(EXTRA_MODULES)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_core_dependencies_are_torch_numpy_scipy_edt():
    requires = metadata.requires("segbalance") or []
    core = {re.split(r"[<>=!~; \[]", r, maxsplit=1)[0].lower() for r in requires if "extra ==" not in r}
    assert core == {"torch", "numpy", "scipy", "edt"}
    extras = set(metadata.metadata("segbalance").get_all("Provides-Extra") or [])
    assert extras >= {"monai", "nnunet", "io", "all"}


def test_loss_library_imports_and_runs_without_any_extra():
    proc = run_without_extras(
        """
        import torch
        from segbalance.monai_losses import get, names
        assert "monai" not in sys.modules and "nnunetv2" not in sys.modules
        logits = torch.randn(2, 3, 8, 12, 12, requires_grad=True)
        target = torch.randint(0, 3, (2, 1, 8, 12, 12))
        required = {"compound": {"terms": {"ce": 1.0, "dice": 1.0}}}
        for name in names():
            value = get(name, **required.get(name, {}))(logits, target)
            assert torch.isfinite(value).all(), name
        print("ok", len(names()))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")


@pytest.mark.parametrize(
    ("module", "extra"),
    [("segbalance.trainers", "nnunet"), ("segbalance.nnunet_losses", "nnunet"),
     ("segbalance.training", "monai"), ("segbalance.evaluation", "monai"),
     ("segbalance.preprocessing", "io"), ("segbalance.io.volumes", "io"),
     ("segbalance.io.dicom_labels", "io"), ("segbalance.io.rtstruct", "io")],
)
def test_missing_extra_is_named(module, extra):
    proc = run_without_extras(
        f"""
        try:
            import {module}
        except ImportError as exc:
            print(type(exc).__name__, exc)
        else:
            print("imported")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("MissingExtraError"), proc.stdout
    assert f'segbalance[{extra}]' in proc.stdout


def test_cli_names_the_missing_extra_in_one_line():
    proc = run_without_extras(
        """
        from segbalance.cli import main
        sys.exit(main(["nnunet-env"]))
        """
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "segbalance[nnunet]" in lines[0], proc.stderr


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """segbalance modules imported at module level (not inside functions): the edges of the import graph."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    body = [n for n in tree.body]
    for node in list(body):
        if isinstance(node, ast.If | ast.Try):  # guarded imports at module level still count
            body.extend(ast.iter_child_nodes(node))
    for node in body:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
    return {m for m in found if m in modules}


def test_import_graph_has_no_cycle():
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {m: _top_level_imports(p, modules) - {m} for m, p in files.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_version_is_single_sourced():
    assert segbalance.__version__ == metadata.version("segbalance")
    assert (ROOT / "LICENSE").is_file() and (PACKAGE / "py.typed").is_file()
    assert f"[{segbalance.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_nothing_refers_to_files_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    offenders = []
    for rel in tracked.stdout.split():
        path = ROOT / rel
        if path.suffix not in {".py", ".md", ".toml", ".sh", ".txt", ""} or not path.is_file() \
                or path == Path(__file__).resolve():
            continue
        text = path.read_text(errors="ignore")
        for needle in ("../shared/", "/work/shared", "shared/data/real", "/ \"shared\"", "'shared'"):
            if needle in text:
                offenders.append(f"{rel}: {needle}")
    assert not offenders, offenders


def test_every_loss_module_is_imported_by_the_package():
    """A new loss module needs no import line: the package imports every module but its helpers."""
    import importlib

    losses = importlib.import_module("segbalance.monai_losses")
    files = {p.stem for p in (PACKAGE / "monai_losses").glob("*.py") if not p.stem.startswith("_")}
    assert losses._HELPERS <= files  # the helper list names real modules
    for stem in files - losses._HELPERS:
        assert f"segbalance.monai_losses.{stem}" in sys.modules, stem
