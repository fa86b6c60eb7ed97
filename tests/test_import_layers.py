"""The package's import graph: no cycle, and no import from a lower layer to a higher one.

Layers, bottom to top (docs/design.md, "Layers"): errors / atomic / labels / extras -> monai_losses -> io
(and synthetic, which builds volumes) -> preprocessing, evaluation, nnunet_losses -> trainers, training ->
compare -> cli, demo, selfcheck, loss_table. Every ``import`` / ``from ... import`` of a ``segbalance``
module is listed from the source with ``ast``, at module level and inside functions alike. The deprecated
re-export modules (old import paths) are exempt from the layer order, and no package module may import
them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "segbalance"

LAYERS: list[tuple[str, ...]] = [
    ("segbalance", "segbalance.errors", "segbalance.atomic", "segbalance.labels", "segbalance.extras"),
    ("segbalance.monai_losses",),
    ("segbalance.io", "segbalance.synthetic"),
    ("segbalance.preprocessing", "segbalance.evaluation", "segbalance.nnunet_losses"),
    ("segbalance.trainers", "segbalance.training"),
    ("segbalance.compare",),
    ("segbalance.cli", "segbalance.demo", "segbalance.selfcheck", "segbalance.loss_table"),
]

#: old import paths kept for one release; they re-export from segbalance.io (and warn)
DEPRECATED = {
    "segbalance.preprocessing.io", "segbalance.preprocessing.volume", "segbalance.preprocessing.dicom",
    "segbalance.preprocessing.dicom_labels", "segbalance.preprocessing.dicom_seg",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The package module that ``import name`` loads last (``a.b.c`` -> ``a.b.c`` or its package)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")
                    up = up[: len(up) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for target in targets:
                if target.split(".")[0] != "segbalance":
                    continue
                resolved = _resolve(target, modules)
                if resolved and resolved != mod:
                    graph[mod].add(resolved)
    return graph


def _layer(module: str) -> int:
    best = (-1, -1)
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                best = max(best, (len(prefix), level))
    if best[1] < 0:
        raise AssertionError(f"{module} belongs to no layer; add it to LAYERS (tests/test_import_layers.py)")
    return best[1]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` re-exporting its submodules is not a cycle with them: Python imports the
    package first either way. Drop edges from a package to its own submodules."""
    return {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}


def test_no_import_cycle():
    cycles = _cycles(_without_package_inits(import_graph()))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_import_goes_up_a_layer():
    graph = import_graph()
    bad = []
    for mod, targets in sorted(graph.items()):
        if mod in DEPRECATED:
            continue
        for target in sorted(targets):
            if target in DEPRECATED:
                bad.append(f"{mod} imports the deprecated {target}")
            elif _layer(target) > _layer(mod):
                bad.append(f"{mod} (layer {_layer(mod)}) imports {target} (layer {_layer(target)})")
    assert not bad, "\n".join(bad)


def test_the_graph_sees_function_level_imports():
    """The scan is not blind: training.predict imports io inside functions only."""
    graph = import_graph()
    assert any(t.startswith("segbalance.io") for t in graph["segbalance.training.predict"])


@pytest.mark.parametrize("old", sorted(DEPRECATED))
def test_old_import_paths_still_work_and_warn(old):
    import importlib
    import sys
    import warnings

    pytest.importorskip("SimpleITK")
    pytest.importorskip("highdicom")
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert any(issubclass(w.category, DeprecationWarning) and "segbalance.io" in str(w.message)
               for w in caught), [str(w.message) for w in caught]
    for name in module.__all__:
        assert getattr(module, name) is not None
